//! A mesh: the control plane's directory of YAML, merged and validated as a whole, and cut into the configuration
//! each kind of sidecar runs.
//!
//! Every file is a [`MeshSpec`]: `services` and `backends` (the mesh's routing, shared by all) and `sidecars` (one
//! per service a sidecar runs next to: its listeners, limits and which services it calls). A sidecar of service
//! `web` gets a [`ConfigSpec`] holding its own listeners, the services it calls and just the backends those reach,
//! and that configuration is validated exactly as a standalone sidecar's file would be. Errors name the file, the
//! field path inside that file, and its line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, FieldError};
use crate::spec::{AdminSpec, BackendSpec, ConfigSpec, LimitsSpec, ListenerSpec, ServiceSpec, TracingSpec};
use crate::validate::{self, locate};

/// One file of a mesh directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeshSpec {
    /// Services, as in a sidecar's file; every sidecar that calls a service gets all of it.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Backends, as in a sidecar's file; a sidecar gets those its services and listeners reach.
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// The sidecars of the mesh, one per service they run next to.
    #[serde(default)]
    pub sidecars: Vec<SidecarSpec>,
}

/// What every sidecar of one service runs: its listeners and limits, and the services its app calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarSpec {
    /// The service this sidecar runs next to (what a sidecar says it is when it connects).
    pub service: String,
    #[serde(default)]
    pub admin: AdminSpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
    /// The services its app calls (routed by its outbound listeners). Absent: every service of the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<String>>,
    /// Trace propagation and span export; `service_name` defaults to `service`.
    #[serde(default)]
    pub tracing: TracingSpec,
}

/// A valid mesh: every sidecar's configuration, ready to push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mesh {
    /// The merged mesh, after any weight overrides.
    pub spec: Arc<MeshSpec>,
    /// By sidecar service.
    pub sidecars: BTreeMap<String, Arc<ConfigSpec>>,
    /// A hash of the merged mesh: equal content, equal hash.
    pub hash: u64,
}

/// Why a mesh directory is not valid: every problem, each with its file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct MeshError {
    pub errors: Vec<MeshFieldError>,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshFieldError {
    /// The file name (as given to [`load_mesh`]); empty for the mesh as a whole.
    pub file: String,
    pub error: FieldError,
}

/// Where an item of the merged mesh came from: its file and its index in that file's list.
#[derive(Clone, Debug)]
struct Origin {
    file: usize,
    index: usize,
}

/// The parsed files and where each merged item came from.
struct Merged<'a> {
    files: &'a [(String, String)],
    spec: MeshSpec,
    services: Vec<Origin>,
    backends: Vec<Origin>,
    sidecars: Vec<Origin>,
}

/// Parses and validates the files of a mesh directory (`(name, text)`, in a stable order) and applies `weights`
/// (service -> backend -> weight, from `attache canary set`) to the routes of those services.
pub fn load_mesh(
    files: &[(String, String)],
    weights: &BTreeMap<String, BTreeMap<String, i64>>,
) -> Result<Mesh, MeshError> {
    let mut merged = merge(files)?;
    let mut errors = Vec::new();
    for (service, split) in weights {
        if let Err(message) = set_weights(&mut merged.spec, service, split) {
            errors.push(MeshFieldError { file: String::new(), error: FieldError::new("", message) });
        }
    }
    errors.extend(check_names(&merged));
    // The routing as a whole, so services no sidecar calls are checked too; a name's second definition was just
    // reported, at its own file and index, so validation sees each name once.
    let all_services = first_of_each(merged.spec.services.iter().map(|s| s.name.as_str()));
    let all_backends = first_of_each(merged.spec.backends.iter().map(|b| b.name.as_str()));
    let routing = ConfigSpec {
        services: all_services.iter().map(|&i| merged.spec.services[i].clone()).collect(),
        backends: all_backends.iter().map(|&i| merged.spec.backends[i].clone()).collect(),
        ..ConfigSpec::default()
    };
    if let Err(e) = crate::Snapshot::try_from(routing) {
        errors.extend(merged.attribute(e, None, &all_services, &all_backends));
    }
    let mut sidecars = BTreeMap::new();
    for (k, sidecar) in merged.spec.sidecars.iter().enumerate() {
        let (config, services, backends) = cut(&merged.spec, sidecar);
        match crate::Snapshot::try_from(config.clone()) {
            Ok(_) => {
                sidecars.insert(sidecar.service.clone(), Arc::new(config));
            }
            // Services and backends were checked as a whole above; what a cut adds is the sidecar's own part.
            Err(e) => errors.extend(
                merged
                    .attribute(e, Some(k), &services, &backends)
                    .into_iter()
                    .filter(|e| e.error.path.starts_with("sidecars[")),
            ),
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, location_key(&a.error)).cmp(&(&b.file, location_key(&b.error))));
        errors.dedup();
        return Err(MeshError { errors });
    }
    let hash = validate::fnv1a(&serde_json::to_vec(&merged.spec).unwrap_or_default());
    Ok(Mesh { spec: Arc::new(merged.spec), sidecars, hash })
}

/// Sets the weights of `service`'s routes: every route that sends to one of the named backends gets exactly the
/// listed backends with the listed weights (other backends of that route are dropped), so `v2=25 v1=75` splits and
/// `v1=100` rolls back.
pub fn set_weights(spec: &mut MeshSpec, service: &str, split: &BTreeMap<String, i64>) -> Result<(), String> {
    let Some(svc) = spec.services.iter_mut().find(|s| s.name == service) else {
        return Err(format!("weights for unknown service `{service}`"));
    };
    let mut touched = false;
    for route in &mut svc.routes {
        if route.backends.iter().any(|b| split.contains_key(&b.name)) {
            route.backends = split
                .iter()
                .map(|(name, weight)| crate::spec::BackendRefSpec { name: name.clone(), weight: *weight })
                .collect();
            touched = true;
        }
    }
    if touched {
        Ok(())
    } else {
        let names: Vec<&str> = split.keys().map(String::as_str).collect();
        Err(format!("no route of service `{service}` sends to any of {}", names.join(", ")))
    }
}

impl Mesh {
    /// The weights of every route of `service`, by route name.
    pub fn weights(&self, service: &str) -> Option<BTreeMap<String, Vec<(String, i64)>>> {
        let svc = self.spec.services.iter().find(|s| s.name == service)?;
        let routes = svc.routes.iter().map(|r| {
            let split = r.backends.iter().map(|b| (b.name.clone(), b.weight)).collect();
            (r.name.clone(), split)
        });
        Some(routes.collect())
    }
}

/// Parses every file (all syntax errors at once) and concatenates their lists.
fn merge(files: &[(String, String)]) -> Result<Merged<'_>, MeshError> {
    let mut merged =
        Merged { files, spec: MeshSpec::default(), services: Vec::new(), backends: Vec::new(), sidecars: Vec::new() };
    let mut errors = Vec::new();
    for (f, (name, text)) in files.iter().enumerate() {
        if validate::is_blank(text) {
            continue;
        }
        let part: MeshSpec = match serde_yaml::from_str(text) {
            Ok(part) => part,
            Err(e) => {
                let located = validate::syntax_error(&e);
                errors.extend(located.errors.into_iter().map(|error| MeshFieldError { file: name.clone(), error }));
                continue;
            }
        };
        let origin = |index| Origin { file: f, index };
        merged.services.extend((0..part.services.len()).map(origin));
        merged.backends.extend((0..part.backends.len()).map(origin));
        merged.sidecars.extend((0..part.sidecars.len()).map(origin));
        merged.spec.services.extend(part.services);
        merged.spec.backends.extend(part.backends);
        merged.spec.sidecars.extend(part.sidecars);
    }
    if errors.is_empty() {
        Ok(merged)
    } else {
        Err(MeshError { errors })
    }
}

/// The indexes of the first item of each name.
fn first_of_each<'a>(names: impl Iterator<Item = &'a str>) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    names.enumerate().filter(|(_, name)| seen.insert(*name)).map(|(i, _)| i).collect()
}

/// Names unique in the whole mesh: each repeat is an error at its own file and index, naming where the first is.
fn check_names(merged: &Merged<'_>) -> Vec<MeshFieldError> {
    let mut errors = Vec::new();
    let spec = &merged.spec;
    let lists: [(&str, Vec<&str>, &[Origin]); 3] = [
        ("services", spec.services.iter().map(|s| s.name.as_str()).collect(), &merged.services),
        ("backends", spec.backends.iter().map(|b| b.name.as_str()).collect(), &merged.backends),
        ("sidecars", spec.sidecars.iter().map(|s| s.service.as_str()).collect(), &merged.sidecars),
    ];
    for (list, names, origins) in lists {
        let field = if list == "sidecars" { "service" } else { "name" };
        let mut seen: BTreeMap<&str, &Origin> = BTreeMap::new();
        for (name, origin) in names.into_iter().zip(origins) {
            match seen.get(name) {
                Some(first) => {
                    let path = format!("{list}[{}].{field}", origin.index);
                    let message = if first.file == origin.file {
                        format!("`{name}` is already defined at {list}[{}]", first.index)
                    } else {
                        format!("`{name}` is also defined in {}", merged.files[first.file].0)
                    };
                    errors.push(merged.located(origin.file, FieldError::new(path, message)));
                }
                None => {
                    seen.insert(name, origin);
                }
            }
        }
    }
    errors
}

/// The configuration one sidecar runs, and which merged services and backends (by index) it holds, in order.
fn cut(spec: &MeshSpec, sidecar: &SidecarSpec) -> (ConfigSpec, Vec<usize>, Vec<usize>) {
    let services: Vec<usize> = (0..spec.services.len())
        .filter(|&i| sidecar.calls.as_ref().is_none_or(|calls| calls.contains(&spec.services[i].name)))
        .collect();
    let mut wanted: BTreeSet<&str> = sidecar.listeners.iter().filter_map(|l| l.tcp_backend.as_deref()).collect();
    for &i in &services {
        for route in &spec.services[i].routes {
            wanted.extend(route.backends.iter().map(|b| b.name.as_str()));
        }
    }
    let backends: Vec<usize> =
        (0..spec.backends.len()).filter(|&i| wanted.contains(spec.backends[i].name.as_str())).collect();
    let config = ConfigSpec {
        admin: sidecar.admin.clone(),
        limits: sidecar.limits.clone(),
        listeners: sidecar.listeners.clone(),
        services: services.iter().map(|&i| spec.services[i].clone()).collect(),
        backends: backends.iter().map(|&i| spec.backends[i].clone()).collect(),
        tracing: TracingSpec {
            service_name: sidecar.tracing.service_name.clone().or_else(|| Some(sidecar.service.clone())),
            ..sidecar.tracing.clone()
        },
    };
    (config, services, backends)
}

impl Merged<'_> {
    /// Maps a validation error of a cut configuration back to the files: `services[j]` is the j-th of `services`
    /// (indexes into the merged list), likewise `backends[j]`; `listeners`, `admin`, `limits` and `tracing` are those of
    /// sidecar `sidecar`.
    fn attribute(
        &self,
        err: ConfigError,
        sidecar: Option<usize>,
        services: &[usize],
        backends: &[usize],
    ) -> Vec<MeshFieldError> {
        err.errors
            .into_iter()
            .map(|e| {
                let (list, index, rest) = split_path(&e.path);
                let origin = match list {
                    "services" => index.and_then(|j| services.get(j)).map(|&i| &self.services[i]),
                    "backends" => index.and_then(|j| backends.get(j)).map(|&i| &self.backends[i]),
                    _ => sidecar.map(|k| &self.sidecars[k]),
                };
                let Some(origin) = origin else {
                    return MeshFieldError { file: String::new(), error: e };
                };
                let path = match list {
                    "services" | "backends" => format!("{list}[{}]{rest}", origin.index),
                    _ => format!("sidecars[{}].{}", origin.index, e.path),
                };
                self.located(origin.file, FieldError::new(path, e.message))
            })
            .collect()
    }

    fn located(&self, file: usize, error: FieldError) -> MeshFieldError {
        let (name, text) = &self.files[file];
        let located = locate(text, ConfigError { errors: vec![error] });
        let error = located.errors.into_iter().next().unwrap_or_else(|| FieldError::new("", ""));
        MeshFieldError { file: name.clone(), error }
    }
}

/// `services[3].routes[0].name` -> (`services`, Some(3), `.routes[0].name`).
fn split_path(path: &str) -> (&str, Option<usize>, &str) {
    let head_end = path.find(['.', '[']).unwrap_or(path.len());
    let list = &path[..head_end];
    let Some(after) = path[head_end..].strip_prefix('[') else { return (list, None, &path[head_end..]) };
    let Some(close) = after.find(']') else { return (list, None, &path[head_end..]) };
    (list, after[..close].parse().ok(), &after[close + 1..])
}

fn location_key(e: &FieldError) -> (usize, usize, &str) {
    e.location.map_or((usize::MAX, usize::MAX, e.path.as_str()), |l| (l.line, l.column, e.path.as_str()))
}

impl fmt::Display for MeshFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}: {}", self.file, self.error)
        }
    }
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "invalid mesh ({n} error{})", if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

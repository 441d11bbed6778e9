//! `attache inject`: Kubernetes YAML in, the same YAML out with the sidecar added to every workload's pod template
//! (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod, and the items of a List). Documents that are
//! no workload, workloads that opt out (`attache.dev/inject: disabled`) and pods already injected come back as they
//! went in, so injecting twice changes nothing. Field order is kept; comments are not.

mod pod;
pub mod webhook;

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_yaml::{Mapping, Value};

pub use self::pod::{INIT_CONTAINER, PROXY_CONTAINER};

/// Annotations a workload (or its pod template) may carry.
pub const ANNOTATION_INJECT: &str = "attache.dev/inject";
pub const ANNOTATION_SKIP_INBOUND_PORTS: &str = "attache.dev/skip-inbound-ports";
pub const ANNOTATION_SKIP_OUTBOUND_PORTS: &str = "attache.dev/skip-outbound-ports";
pub const ANNOTATION_SKIP_OUTBOUND_CIDRS: &str = "attache.dev/skip-outbound-cidrs";

pub const DEFAULT_IMAGE: &str = "ghcr.io/attache-mesh/attache:0.1.0";
pub const DEFAULT_CONTROL_PLANE: &str = "attache.attache-system.svc:7070";

/// What the injected sidecar is told.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct InjectOptions {
    /// The image with both binaries (`deploy/Dockerfile`).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// The control plane the sidecars follow.
    #[arg(long = "sidecar-control-plane", default_value = DEFAULT_CONTROL_PLANE)]
    pub control_plane: String,
    /// The UID the proxy runs as (excluded from interception).
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self { image: DEFAULT_IMAGE.to_owned(), control_plane: DEFAULT_CONTROL_PLANE.to_owned(), proxy_uid: 1337 }
    }
}

/// What happened to one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    AlreadyInjected,
    OptedOut,
}

/// Injects every workload in a multi-document YAML stream; returns the stream and what happened to each workload
/// (`kind/name`).
pub fn inject_stream(text: &str, opts: &InjectOptions) -> anyhow::Result<(String, Vec<(String, Outcome)>)> {
    let mut docs = Vec::new();
    let mut report = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut value = Value::deserialize(doc).with_context(|| format!("document {} is not valid YAML", i + 1))?;
        if value.is_null() {
            continue;
        }
        inject_value(&mut value, opts, &mut report);
        docs.push(serde_yaml::to_string(&value).context("writing YAML")?);
    }
    Ok((docs.join("---\n"), report))
}

/// Injects `value` if it is a workload (or a List of them).
pub fn inject_value(value: &mut Value, opts: &InjectOptions, report: &mut Vec<(String, Outcome)>) {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if kind == "List" {
        if let Some(items) = value.get_mut("items").and_then(Value::as_sequence_mut) {
            for item in items {
                inject_value(item, opts, report);
            }
        }
        return;
    }
    let template_path: &[&str] = match kind.as_str() {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return,
    };
    let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("").to_owned();
    let workload_opted_out = opted_out(value.get("metadata"));
    let Some(template) = walk(value, template_path) else { return };
    let outcome = if workload_opted_out || opted_out(template.get("metadata")) {
        Outcome::OptedOut
    } else {
        pod::inject_template(template, &name, opts)
    };
    report.push((format!("{kind}/{name}"), outcome));
}

fn walk<'v>(mut value: &'v mut Value, path: &[&str]) -> Option<&'v mut Value> {
    for key in path {
        value = value.get_mut(*key)?;
    }
    value.is_mapping().then_some(value)
}

fn opted_out(metadata: Option<&Value>) -> bool {
    annotation(metadata, ANNOTATION_INJECT).is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
}

pub(crate) fn annotation<'v>(metadata: Option<&'v Value>, key: &str) -> Option<&'v str> {
    metadata?.get("annotations")?.get(key)?.as_str()
}

/// `map[key]`, created as an empty mapping (or sequence) when absent.
pub(crate) fn entry<'m>(map: &'m mut Mapping, key: &str, empty: Value) -> &'m mut Value {
    map.entry(Value::String(key.to_owned())).or_insert(empty)
}

/// Reads the YAML from a file (or stdin for `-`), injects it, writes it to stdout, and says what it did on stderr.
pub fn run(file: &std::path::Path, opts: &InjectOptions) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let (out, report) = inject_stream(&text, opts)?;
    print!("{out}");
    for (workload, outcome) in report {
        let what = match outcome {
            Outcome::Injected => "injected",
            Outcome::AlreadyInjected => "already injected",
            Outcome::OptedOut => "skipped (attache.dev/inject: disabled)",
        };
        eprintln!("{workload}: {what}");
    }
    Ok(())
}

#[cfg(test)]
mod tests;

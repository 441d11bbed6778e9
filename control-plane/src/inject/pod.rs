//! The sidecar in one pod template: the iptables init step, the proxy as a native sidecar (an init container with
//! `restartPolicy: Always`: it starts before the app, and a Job still completes), its volumes, and a marker.

use serde_yaml::{Mapping, Value};

use super::{annotation, entry, InjectOptions, Outcome};

pub const PROXY_CONTAINER: &str = "attache-proxy";
pub const INIT_CONTAINER: &str = "attache-init";
const ANNOTATION_INJECTED: &str = "attache.dev/injected";
const ADMIN_PORT: u16 = 9901;
const INBOUND_PORT: u16 = 4143;
const OUTBOUND_PORT: u16 = 4140;

/// Injects the pod template `template` (a mapping with `metadata` and `spec`) of workload `workload`.
pub fn inject_template(template: &mut Value, workload: &str, opts: &InjectOptions) -> Outcome {
    let Some(t) = template.as_mapping_mut() else { return Outcome::AlreadyInjected };
    let metadata = entry(t, "metadata", Value::Mapping(Mapping::new()));
    let service = service_name(metadata, workload);
    let skips = Skips::from(&*metadata);
    let Some(spec) = t.get_mut("spec").and_then(Value::as_mapping_mut) else { return Outcome::AlreadyInjected };
    let init = entry(spec, "initContainers", Value::Sequence(Vec::new()));
    let Some(init) = init.as_sequence_mut() else { return Outcome::AlreadyInjected };
    if init.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER)) {
        return Outcome::AlreadyInjected;
    }
    let app_ports = app_ports(spec);
    let init = entry(spec, "initContainers", Value::Sequence(Vec::new()));
    if let Some(init) = init.as_sequence_mut() {
        // The rules first, then the proxy: the app's containers start only once the proxy is started.
        init.insert(0, yaml(&proxy_container(&service, opts)));
        init.insert(0, yaml(&init_container(&app_ports, &skips, opts)));
    }
    let volumes = entry(spec, "volumes", Value::Sequence(Vec::new()));
    if let Some(volumes) = volumes.as_sequence_mut() {
        volumes.extend(VOLUMES.iter().map(|v| yaml(v)));
    }
    if let Some(metadata) = t.get_mut("metadata").and_then(Value::as_mapping_mut) {
        let annotations = entry(metadata, "annotations", Value::Mapping(Mapping::new()));
        if let Some(a) = annotations.as_mapping_mut() {
            a.insert(ANNOTATION_INJECTED.into(), env!("CARGO_PKG_VERSION").into());
        }
    }
    Outcome::Injected
}

/// The service this pod is: `app.kubernetes.io/name`, else `app`, else the workload's name.
fn service_name(metadata: &Value, workload: &str) -> String {
    let label = |k: &str| metadata.get("labels").and_then(|l| l.get(k)).and_then(Value::as_str).map(str::to_owned);
    label("app.kubernetes.io/name").or_else(|| label("app")).unwrap_or_else(|| workload.to_owned())
}

/// Skip lists from the template's annotations.
struct Skips {
    inbound_ports: Option<String>,
    outbound_ports: Option<String>,
    outbound_cidrs: Option<String>,
}

impl From<&Value> for Skips {
    fn from(metadata: &Value) -> Self {
        let get = |k: &str| annotation(Some(metadata), k).map(|v| v.replace(' ', ""));
        Self {
            inbound_ports: get(super::ANNOTATION_SKIP_INBOUND_PORTS),
            outbound_ports: get(super::ANNOTATION_SKIP_OUTBOUND_PORTS),
            outbound_cidrs: get(super::ANNOTATION_SKIP_OUTBOUND_CIDRS),
        }
    }
}

/// The TCP ports the app's containers declare: these, and only these, are intercepted inbound.
fn app_ports(spec: &Mapping) -> Vec<u64> {
    let containers = spec.get("containers").and_then(Value::as_sequence).cloned().unwrap_or_default();
    let mut ports: Vec<u64> = containers
        .iter()
        .filter_map(|c| c.get("ports").and_then(Value::as_sequence).cloned())
        .flatten()
        .filter(|p| p.get("protocol").and_then(Value::as_str).is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// A double-quoted scalar (JSON strings are YAML), whatever the text holds.
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or(Value::Null)
}

fn init_container(app_ports: &[u64], skips: &Skips, opts: &InjectOptions) -> String {
    let mut args = vec![
        "init".to_owned(),
        "--proxy-uid".to_owned(),
        opts.proxy_uid.to_string(),
        "--inbound-port".to_owned(),
        INBOUND_PORT.to_string(),
        "--outbound-port".to_owned(),
        OUTBOUND_PORT.to_string(),
    ];
    if !app_ports.is_empty() {
        let ports: Vec<String> = app_ports.iter().map(u64::to_string).collect();
        args.extend(["--inbound-ports".to_owned(), ports.join(",")]);
    }
    let admin = ADMIN_PORT.to_string();
    let inbound_skips = skips.inbound_ports.as_ref().map_or(admin.clone(), |s| format!("{admin},{s}"));
    args.extend(["--skip-inbound-ports".to_owned(), inbound_skips]);
    if let Some(p) = &skips.outbound_ports {
        args.extend(["--skip-outbound-ports".to_owned(), p.clone()]);
    }
    if let Some(c) = &skips.outbound_cidrs {
        args.extend(["--skip-outbound-cidrs".to_owned(), c.clone()]);
    }
    let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
    format!(
        r#"name: {INIT_CONTAINER}
image: {image}
args: [{args}]
securityContext:
  runAsUser: 0
  runAsNonRoot: false
  allowPrivilegeEscalation: false
  capabilities:
    add: [NET_ADMIN, NET_RAW]
    drop: [ALL]
resources:
  requests: {{ cpu: 10m, memory: 16Mi }}
  limits: {{ memory: 64Mi }}
"#,
        image = quote(&opts.image),
        args = args.join(", ")
    )
}

fn proxy_container(service: &str, opts: &InjectOptions) -> String {
    format!(
        r#"name: {PROXY_CONTAINER}
image: {image}
restartPolicy: Always
args: ["run"]
env:
  - {{ name: ATTACHE_CONTROL_PLANE, value: {control_plane} }}
  - {{ name: ATTACHE_SERVICE, value: {service} }}
  - name: ATTACHE_NAMESPACE
    valueFrom: {{ fieldRef: {{ fieldPath: metadata.namespace }} }}
  - name: ATTACHE_INSTANCE
    valueFrom: {{ fieldRef: {{ fieldPath: metadata.name }} }}
  - name: ATTACHE_SERVICE_ACCOUNT
    valueFrom: {{ fieldRef: {{ fieldPath: spec.serviceAccountName }} }}
  - {{ name: ATTACHE_STATE_DIR, value: /var/lib/attache }}
  - {{ name: ATTACHE_CONTROL_PLANE_CA, value: /var/run/attache/ca/ca.pem }}
  - {{ name: ATTACHE_BOOTSTRAP_TOKEN_FILE, value: /var/run/attache/token/token }}
ports:
  - {{ name: attache-inbound, containerPort: {INBOUND_PORT}, protocol: TCP }}
  - {{ name: attache-admin, containerPort: {ADMIN_PORT}, protocol: TCP }}
startupProbe:
  httpGet: {{ path: /ready, port: {ADMIN_PORT} }}
  periodSeconds: 1
  failureThreshold: 120
livenessProbe:
  httpGet: {{ path: /live, port: {ADMIN_PORT} }}
  periodSeconds: 10
readinessProbe:
  httpGet: {{ path: /ready, port: {ADMIN_PORT} }}
  periodSeconds: 5
resources:
  requests: {{ cpu: 50m, memory: 32Mi }}
  limits: {{ memory: 256Mi }}
securityContext:
  runAsUser: {uid}
  runAsGroup: {uid}
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
volumeMounts:
  - {{ name: attache-state, mountPath: /var/lib/attache }}
  - {{ name: attache-ca, mountPath: /var/run/attache/ca, readOnly: true }}
  - {{ name: attache-token, mountPath: /var/run/attache/token, readOnly: true }}
"#,
        image = quote(&opts.image),
        control_plane = quote(&opts.control_plane),
        service = quote(service),
        uid = opts.proxy_uid,
    )
}

/// The sidecar's state (last good config, its key and certificate), the mesh CA, the bootstrap token.
const VOLUMES: [&str; 3] = [
    "{ name: attache-state, emptyDir: { medium: Memory, sizeLimit: 16Mi } }",
    "{ name: attache-ca, configMap: { name: attache-ca } }",
    "{ name: attache-token, secret: { secretName: attache-bootstrap-token } }",
];

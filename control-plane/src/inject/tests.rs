//! Golden tests: `control-plane/tests/inject/<case>.in.yaml` injected is `<case>.out.yaml`, and injecting that
//! again changes nothing. Regenerate with `UPDATE_GOLDEN=1 cargo test -p attache-control-plane inject`.

use std::path::PathBuf;

use super::*;

fn opts() -> InjectOptions {
    InjectOptions {
        image: "ghcr.io/attache-mesh/attache:0.1.0".into(),
        control_plane: "attache.attache-system.svc:7070".into(),
        proxy_uid: 1337,
    }
}

fn golden(case: &str) -> (String, Vec<(String, Outcome)>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inject");
    let input = std::fs::read_to_string(dir.join(format!("{case}.in.yaml"))).unwrap_or_else(|e| panic!("{case}: {e}"));
    let (out, report) = inject_stream(&input, &opts()).unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let expected_path = dir.join(format!("{case}.out.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&expected_path, &out).unwrap_or_else(|e| panic!("{e}"));
    }
    let expected =
        std::fs::read_to_string(&expected_path).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
    assert_eq!(out, expected, "{case}: output differs from {}", expected_path.display());
    let (again, second) = inject_stream(&out, &opts()).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(again, out, "{case}: injecting twice must change nothing");
    assert!(second.iter().all(|(_, o)| *o != Outcome::Injected), "{second:?}");
    (out, report)
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap_or(Value::Null)).collect()
}

#[test]
fn a_deployment_gets_the_init_step_and_a_native_sidecar_and_the_service_passes_through() {
    let (out, report) = golden("deployment");
    assert_eq!(report, [("Deployment/reviews-v1".to_owned(), Outcome::Injected)]);
    let docs = docs(&out);
    let spec = &docs[0]["spec"]["template"]["spec"];
    let init = spec["initContainers"].as_sequence().cloned().unwrap_or_default();
    assert_eq!(init[0]["name"], INIT_CONTAINER);
    assert_eq!(init[1]["name"], PROXY_CONTAINER);
    assert_eq!(init[1]["restartPolicy"], "Always");
    let args: Vec<&str> = init[0]["args"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    let joined = args.join(" ");
    assert!(joined.contains("--inbound-ports 9080,9090"), "TCP ports only: {joined}");
    assert!(joined.contains("--skip-outbound-cidrs 10.96.0.0/12"), "{joined}");
    let env = init[1]["env"].as_sequence().cloned().unwrap_or_default();
    let service = env.iter().find(|e| e["name"] == "ATTACHE_SERVICE").map(|e| e["value"].clone());
    assert_eq!(service, Some(Value::from("reviews")), "the app label names the service");
    assert_eq!(spec["containers"][0]["name"], "reviews", "the app container is untouched");
    // Field order and content of everything else stay.
    assert_eq!(docs[1], docs_of("deployment.in.yaml")[1]);
}

fn docs_of(file: &str) -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/inject");
    docs(&std::fs::read_to_string(dir.join(file)).unwrap_or_default())
}

#[test]
fn every_workload_kind_is_injected() {
    let (_, report) = golden("workloads");
    let injected: Vec<&str> = report.iter().filter(|(_, o)| *o == Outcome::Injected).map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        injected,
        ["StatefulSet/db", "DaemonSet/agent", "ReplicaSet/web-rs", "Job/report", "CronJob/nightly", "Pod/debug"]
    );
}

#[test]
fn opted_out_workloads_and_other_documents_pass_through() {
    let (out, report) = golden("opt-out");
    assert!(report.iter().all(|(_, o)| *o == Outcome::OptedOut), "{report:?}");
    assert_eq!(docs(&out), docs_of("opt-out.in.yaml"));
}

#[test]
fn the_existing_init_containers_run_after_the_proxy() {
    let (out, _) = golden("workloads");
    let rs = &docs(&out)[2]["spec"]["template"]["spec"]["initContainers"];
    let names: Vec<&str> = rs.as_sequence().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
}

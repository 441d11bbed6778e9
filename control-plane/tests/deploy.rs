//! `deploy/` stays true: its mesh directories are valid meshes, and the injected example app is what
//! `attache inject` makes of the app as written. (CI also validates every manifest against the Kubernetes schemas.)

use std::path::PathBuf;

use attache_control_plane::inject::{inject_stream, InjectOptions, Outcome};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn deploy_mesh_directories_are_valid() {
    for dir in ["deploy/k8s/control-plane/mesh", "deploy/compose/mesh"] {
        let (ok, text) = attache_control_plane::cli::check(&root().join(dir));
        assert!(ok, "{dir}:\n{text}");
    }
}

#[test]
fn the_example_app_is_injected_and_up_to_date() {
    let example = root().join("deploy/k8s/example");
    let app = std::fs::read_to_string(example.join("app.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let opts = InjectOptions {
        image: "ghcr.io/attache-mesh/attache:0.1.0".into(),
        control_plane: "attache.attache-system.svc:7070".into(),
        proxy_uid: 1337,
    };
    let (injected, report) = inject_stream(&app, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(report.len(), 3);
    assert!(report.iter().all(|(_, o)| *o == Outcome::Injected), "{report:?}");
    let committed = std::fs::read_to_string(example.join("app-injected.yaml")).unwrap_or_default();
    assert!(
        committed == injected,
        "deploy/k8s/example/app-injected.yaml is stale; regenerate with:\n\n    cargo run --bin attache -- inject -f deploy/k8s/example/app.yaml > deploy/k8s/example/app-injected.yaml\n"
    );
}

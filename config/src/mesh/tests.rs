//! Mesh directories: merged, cut per sidecar, validated, errors traced to their file, line and column.

use std::collections::BTreeMap;

use super::*;

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect()
}

const ROUTING: &str = "\
services:
  - name: reviews
    hosts: [reviews]
    routes:
      - name: default
        backends: [{ name: reviews-v1, weight: 90 }, { name: reviews-v2, weight: 10 }]
  - name: ratings
    hosts: [ratings]
    routes:
      - name: default
        backends: [{ name: ratings }]
backends:
  - { name: reviews-v1, endpoints: [\"127.0.0.1:9001\"] }
  - { name: reviews-v2, endpoints: [\"127.0.0.1:9002\"] }
  - { name: ratings, endpoints: [\"127.0.0.1:9003\"] }
  - { name: db, endpoints: [\"127.0.0.1:5432\"] }
";

const SIDECARS: &str = "\
sidecars:
  - service: web
    listeners:
      - { name: outbound, address: \"127.0.0.1:0\", direction: outbound }
    calls: [reviews]
  - service: reviews
    listeners:
      - { name: inbound, address: \"127.0.0.1:0\", direction: inbound, app: \"127.0.0.1:9001\" }
      - { name: outbound, address: \"127.0.0.1:0\", direction: outbound, tcp_backend: db }
";

fn no_weights() -> BTreeMap<String, BTreeMap<String, i64>> {
    BTreeMap::new()
}

fn names(c: &ConfigSpec) -> (Vec<String>, Vec<String>) {
    (c.services.iter().map(|s| s.name.clone()).collect(), c.backends.iter().map(|b| b.name.clone()).collect())
}

#[test]
fn each_sidecar_gets_its_listeners_the_services_it_calls_and_only_their_backends() {
    let mesh = load_mesh(&files(&[("routing.yaml", ROUTING), ("sidecars.yaml", SIDECARS)]), &no_weights()).unwrap();
    let web = &mesh.sidecars["web"];
    assert_eq!(names(web), (vec!["reviews".into()], vec!["reviews-v1".into(), "reviews-v2".into()]));
    assert_eq!(web.listeners.len(), 1);
    // No `calls`: every service; and the backend its TCP listener forwards to.
    let reviews = &mesh.sidecars["reviews"];
    assert_eq!(names(reviews).0, ["reviews", "ratings"]);
    assert_eq!(names(reviews).1, ["reviews-v1", "reviews-v2", "ratings", "db"]);
}

#[test]
fn equal_content_hashes_equal_and_weights_change_it() {
    let f = files(&[("a.yaml", ROUTING), ("b.yaml", SIDECARS)]);
    let a = load_mesh(&f, &no_weights()).unwrap();
    assert_eq!(a.hash, load_mesh(&f, &no_weights()).unwrap().hash);
    let split = |pairs: &[(&str, i64)]| pairs.iter().map(|(b, w)| ((*b).to_owned(), *w)).collect::<BTreeMap<_, _>>();
    let mut weights = BTreeMap::new();
    weights.insert("reviews".to_owned(), split(&[("reviews-v2", 25), ("reviews-v1", 75)]));
    let b = load_mesh(&f, &weights).unwrap();
    assert_ne!(a.hash, b.hash);
    let routes = b.weights("reviews").unwrap();
    assert_eq!(routes["default"], [("reviews-v1".to_owned(), 75), ("reviews-v2".to_owned(), 25)]);
    // Rolling back to one backend drops the other from the route.
    weights.insert("reviews".to_owned(), split(&[("reviews-v1", 100)]));
    let c = load_mesh(&f, &weights).unwrap();
    assert_eq!(c.weights("reviews").unwrap()["default"], [("reviews-v1".to_owned(), 100)]);
    assert_eq!(c.sidecars["web"].backends.len(), 1, "a backend no route sends to is not pushed");
}

#[test]
fn errors_name_the_file_and_the_line_where_the_problem_is() {
    let bad_sidecar = "\
sidecars:
  - service: web
    listeners:
      - name: outbound
        address: 127.0.0.1
        direction: outbound
";
    let bad_route = "\
services:
  - name: shop
    hosts: [shop]
    routes:
      - name: default
        backends:
          - name: nowhere
";
    let list = files(&[("a.yaml", ROUTING), ("b.yaml", bad_route), ("c.yaml", bad_sidecar)]);
    let err = load_mesh(&list, &no_weights()).unwrap_err();
    let shown: Vec<String> = err.errors.iter().map(ToString::to_string).collect();
    assert_eq!(err.errors.len(), 2, "{shown:#?}");
    assert!(shown[0].starts_with("b.yaml: services[0].routes[0].backends[0].name (line 7, column 13)"), "{shown:#?}");
    assert!(shown[1].starts_with("c.yaml: sidecars[0].listeners[0].address (line 5, column 9)"), "{shown:#?}");
}

#[test]
fn a_name_defined_in_two_files_is_an_error_at_the_second() {
    let again = "backends:\n  - { name: db, endpoints: [\"127.0.0.1:1\"] }\n";
    let err = load_mesh(&files(&[("a.yaml", ROUTING), ("b.yaml", again)]), &no_weights()).unwrap_err();
    let shown = err.errors[0].to_string();
    assert!(shown.starts_with("b.yaml: backends[0].name (line 2, column 3)"), "{shown}");
    assert!(shown.contains("also defined in a.yaml"), "{shown}");
}

#[test]
fn syntax_errors_of_every_file_are_reported_and_weights_for_unknown_services_refused() {
    let list = files(&[("a.yaml", "services: [\n"), ("b.yaml", "sidecar: []\n")]);
    let err = load_mesh(&list, &no_weights()).unwrap_err();
    assert_eq!(err.errors.iter().map(|e| e.file.as_str()).collect::<Vec<_>>(), ["a.yaml", "b.yaml"]);
    let mut weights = BTreeMap::new();
    weights.insert("nope".to_owned(), BTreeMap::from([("x".to_owned(), 1)]));
    let err = load_mesh(&files(&[("a.yaml", ROUTING)]), &weights).unwrap_err();
    assert!(err.to_string().contains("unknown service `nope`"), "{err}");
}

#[test]
fn a_sidecars_spans_are_named_after_its_service_and_its_tracing_errors_point_at_its_file() {
    let traced = SIDECARS.replace(
        "    calls: [reviews]\n",
        "    calls: [reviews]\n    tracing:\n      otlp: { endpoint: \"http://127.0.0.1:4318\" }\n",
    );
    let mesh = load_mesh(&files(&[("routing.yaml", ROUTING), ("sidecars.yaml", &traced)]), &no_weights()).unwrap();
    assert_eq!(mesh.sidecars["web"].tracing.service_name.as_deref(), Some("web"));
    assert!(mesh.sidecars["web"].tracing.otlp.is_some());
    assert_eq!(mesh.sidecars["reviews"].tracing.service_name.as_deref(), Some("reviews"));

    let bad = traced.replace("http://127.0.0.1:4318", "https://collector:4318");
    let err = load_mesh(&files(&[("routing.yaml", ROUTING), ("sidecars.yaml", &bad)]), &no_weights()).unwrap_err();
    let shown: Vec<String> = err.errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(shown[0].starts_with("sidecars.yaml: sidecars[0].tracing.otlp.endpoint (line 7, column 7)"), "{shown:#?}");
}

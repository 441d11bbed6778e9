//! The admission webhook: the control plane answers an AdmissionReview for a Pod (posted with curl, as the API
//! server would) with a JSON patch that adds the sidecar.

use attache_tests::{client, mesh};

use super::among_others;

const MESH: &str = "services:\n  - name: web\n    hosts: [web]\n    routes: [{ name: default, backends: [{ name: web }] }]\nbackends:\n  - { name: web, endpoints: [\"127.0.0.1:9\"] }\n";

#[tokio::test]
async fn a_pod_review_is_answered_with_the_sidecar_patch() {
    let _shared = among_others().await;
    let cp = mesh::control_plane().file("mesh.yaml", MESH).run().await;
    let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","object":
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","labels":{"app":"web"}},
         "spec":{"containers":[{"name":"web","image":"web:1","ports":[{"containerPort":8080}]}]}}}}"#;
    let rsp = client::curl()
        .url(format!("http://{}/inject", cp.addr()))
        .header("content-type", "application/json")
        .data(review)
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let answer = rsp.json();
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(answer["response"]["patch"].as_str().is_some_and(|p| !p.is_empty()));

    let bad = client::curl().url(format!("http://{}/inject", cp.addr())).data("{}").run().await;
    assert_eq!(bad.map(|r| r.status).unwrap_or_default(), 400);
}

//! What is not valid is not run: an invalid directory is never published (the status says why, naming the file,
//! field, line and column, while every sidecar keeps serving), and a configuration a sidecar cannot apply is NACKed
//! with the reason while that sidecar keeps serving its previous version.

use std::net::SocketAddr;

use attache_control_plane::cli;
use attache_tests::wait::secs;
use attache_tests::{mesh, proxy, server, TempDir};

use super::{among_others, api_backends, api_mesh, position, routed, routing, served_version, sidecar, sidecars};

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_file_is_never_applied_and_fixing_it_publishes_a_new_version() {
    let _shared = among_others().await;
    let (v1, v2, cp) = api_mesh().await;
    let state = TempDir::new("attache-web");
    let web = mesh::sidecars(&cp, "web", 3, state.path()).await;
    let good = cp.version().await;
    cp.await_acked(3, good, secs(10)).await;

    // A route to a backend that does not exist.
    let broken = routing(v1.addr(), v2.addr(), "api-v3");
    let (line, column) = position(&broken, "name: api-v3");
    cp.write("routing.yaml", &broken);
    let status = cp.await_status("the directory to be reported invalid", secs(5), |s| !s.mesh.errors.is_empty()).await;
    assert_eq!(status.mesh.errors.len(), 1, "{:#?}", status.mesh.errors);
    let error = &status.mesh.errors[0];
    let at = format!("routing.yaml: services[0].routes[0].backends[0].name (line {line}, column {column})");
    assert!(error.starts_with(&at), "expected {at:?}: {error}");
    assert!(error.contains("api-v3"), "the unknown name is not shown: {error}");

    // Nothing was published or pushed: every sidecar still runs (and routes by) the last good version.
    assert_eq!(status.mesh.version, good);
    for s in &status.sidecars {
        assert!(s.connected && s.acked_version == good && s.pushed_version == good && s.nack.is_none(), "{s:#?}");
    }
    for sidecar in &web {
        for _ in 0..10 {
            assert_eq!(routed(sidecar, "api").await, "api-v1");
        }
        assert_eq!(served_version(sidecar).await, good);
        let metrics = sidecar.metrics().await;
        assert_eq!(metrics.sum("attache_config_reloads_total", &[("result", "rejected")]), 0.0, "{metrics}");
    }
    assert_eq!(v2.requests(), 0);
    let metrics = cp.metrics().await;
    assert_eq!(metrics.value("attache_control_plane_mesh_valid", &[]), Some(0.0), "{metrics}");
    assert_eq!(metrics.sum("attache_control_plane_mesh_reloads_total", &[("result", "rejected")]), 1.0, "{metrics}");
    // `attache status` says so too.
    let text = cli::status(&cp.api()).await.unwrap();
    assert!(text.contains(&format!("the directory is INVALID and not served; version {good} still is")), "{text}");
    assert!(text.contains(&at), "{text}");

    // The fix is published as the next version, and every sidecar ACKs and routes by it.
    cp.write("routing.yaml", &routing(v1.addr(), v2.addr(), "api-v2"));
    let status = cp.await_acked(3, good + 1, secs(10)).await;
    assert!(status.mesh.errors.is_empty(), "{:?}", status.mesh.errors);
    for sidecar in &web {
        assert_eq!(routed(sidecar, "api").await, "api-v2");
    }
    assert_eq!(cp.metrics().await.value("attache_control_plane_mesh_valid", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_breaks_the_mesh_is_named_and_removing_it_serves_on_unchanged() {
    let _shared = among_others().await;
    let (_v1, v2, cp) = api_mesh().await;
    let state = TempDir::new("attache-web");
    let web = proxy::new().follow(cp.addr(), "web", "web-0", state.path()).run().await;
    let good = cp.version().await;
    cp.await_acked(1, good, secs(10)).await;

    // Another team's file defines a backend name routing.yaml already has.
    let teams = format!("backends:\n  - name: api-v1\n    endpoints:\n      - \"{}\"\n", v2.addr());
    cp.write("teams.yaml", &teams);
    let status = cp.await_status("the directory to be reported invalid", secs(5), |s| !s.mesh.errors.is_empty()).await;
    let error = &status.mesh.errors[0];
    assert!(error.starts_with("teams.yaml: backends[0].name (line 2, column 5)"), "{error}");
    assert!(error.contains("also defined in routing.yaml"), "{error}");
    assert_eq!(status.mesh.version, good);
    assert_eq!(routed(&web, "api").await, "api-v1");

    // Removing it makes the directory what is served already: valid again, and nothing new to publish.
    cp.remove("teams.yaml");
    let status = cp.await_status("the errors to clear", secs(5), |s| s.mesh.errors.is_empty()).await;
    assert_eq!(status.mesh.version, good, "an unchanged mesh was republished");
    assert_eq!(sidecar(&status, "web-0").acked_version, good);
    assert_eq!(routed(&web, "api").await, "api-v1");
    assert_eq!(v2.requests(), 0);
}

/// `shop.yaml`: service `shop` (host `shop`) routing to backend `payments` at `addr`, which the sidecar dials with
/// mTLS from the files in `certs` when given.
fn shop(addr: SocketAddr, certs: Option<&std::path::Path>) -> String {
    let mut yaml = format!(
        "services:\n  - name: shop\n    hosts:\n      - shop\n    routes:\n      - name: default\n        backends:\n          \
         - name: payments\nbackends:\n  - name: payments\n    endpoints:\n      - \"{addr}\"\n"
    );
    if let Some(dir) = certs {
        let file = |name: &str| dir.join(name).display().to_string();
        yaml.push_str(&format!(
            "    tls:\n      identity: spiffe://example.org/ns/default/sa/payments\n      cert: {}\n      key: {}\n      \
             trust_bundle: {}\n",
            file("checkout.crt"),
            file("checkout.key"),
            file("bundle.crt")
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_a_sidecar_cannot_apply_is_nacked_and_it_serves_its_previous_version() {
    let _shared = among_others().await;
    let (v1, v2) = api_backends().await;
    let payments = server::http1().name("payments").route_prefix("/", server::ok("payments")).run().await;
    let cp = mesh::control_plane()
        .file("routing.yaml", routing(v1.addr(), v2.addr(), "api-v1"))
        .file("shop.yaml", shop(payments.addr(), None))
        .file("sidecars.yaml", sidecars(&[("web", &["api"]), ("checkout", &["shop"])]))
        .run()
        .await;
    let state = TempDir::new("attache-sidecars");
    let web = proxy::new().follow(cp.addr(), "web", "web-0", state.path().join("web-0")).run().await;
    let checkout =
        proxy::new().follow(cp.addr(), "checkout", "checkout-0", state.path().join("checkout-0")).run().await;
    let good = cp.version().await;
    cp.await_acked(2, good, secs(10)).await;
    assert_eq!(routed(&checkout, "shop").await, "payments");

    // payments now needs client certificates that do not exist where the checkout sidecar runs. The mesh is valid
    // (the control plane does not read sidecars' files), so it is published; only checkout calls shop.
    let nowhere = TempDir::new("attache-no-certs");
    let missing = nowhere.path().join("absent");
    cp.write("shop.yaml", &shop(payments.addr(), Some(&missing)));
    let status = cp
        .await_status("checkout-0 to NACK the new version", secs(10), |s| {
            s.mesh.version == good + 1 && s.sidecars.iter().any(|c| c.node.instance == "checkout-0" && c.nack.is_some())
        })
        .await;
    let refused = sidecar(&status, "checkout-0");
    assert_eq!((refused.pushed_version, refused.acked_version), (good + 1, good), "{refused:#?}");
    let reason = refused.nack.as_deref().unwrap();
    assert!(reason.contains("backends[0].tls.cert"), "the reason does not name the field: {reason}");
    assert!(reason.contains(&missing.join("checkout.crt").display().to_string()), "no file in: {reason}");
    // web-0 got the same version and applied it.
    let status = cp
        .await_status("web-0 to ACK it", secs(10), |s| {
            s.sidecars.iter().any(|w| w.node.instance == "web-0" && w.acked_version == good + 1)
        })
        .await;
    assert!(sidecar(&status, "web-0").nack.is_none());

    // `attache status` shows who refused which version and why.
    let text = cli::status(&cp.api()).await.unwrap();
    let line = |instance: &str| {
        let found = text.lines().find(|l| l.split_whitespace().nth(1) == Some(instance));
        found.unwrap_or_else(|| panic!("no line for {instance}:\n{text}")).to_owned()
    };
    let nack = line("checkout-0");
    assert!(nack.contains(&format!("NACK of {}: ", good + 1)) && nack.contains("backends[0].tls.cert"), "{text}");
    assert!(line("web-0").ends_with("up to date (ACK)"), "{text}");

    // The checkout sidecar serves on with what it ran: plaintext to payments, version `good`, the rejection shown.
    for _ in 0..10 {
        assert_eq!(routed(&checkout, "shop").await, "payments");
    }
    let view = checkout.config_view().await;
    assert_eq!(view["version"], good, "{view:#}");
    assert_eq!(view["last_reload"]["result"], "rejected", "{view:#}");
    let metrics = checkout.metrics().await;
    assert_eq!(metrics.sum("attache_config_reloads_total", &[("result", "rejected")]), 1.0, "{metrics}");
    assert_eq!(metrics.value("attache_config_version", &[]), Some(good as f64), "{metrics}");
    assert_eq!(served_version(&web).await, good + 1);
    let metrics = cp.metrics().await;
    assert_eq!(metrics.sum("attache_control_plane_answers_total", &[("result", "nack")]), 1.0, "{metrics}");

    // Taking the TLS out again is the next version; both sidecars ACK it and the NACK is gone.
    cp.write("shop.yaml", &shop(payments.addr(), None));
    cp.await_acked(2, good + 2, secs(10)).await;
    assert_eq!(served_version(&checkout).await, good + 2);
    assert_eq!(routed(&checkout, "shop").await, "payments");
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_of_a_service_the_mesh_drops_are_told_so_and_serve_on() {
    let _shared = among_others().await;
    let (_v1, _v2, cp) = api_mesh().await;
    let state = TempDir::new("attache-web");
    let web = mesh::sidecars(&cp, "web", 2, state.path()).await;
    let good = cp.version().await;
    cp.await_acked(2, good, secs(10)).await;

    // Without sidecars.yaml the mesh is valid but has nothing for `web`: a new version its sidecars cannot run.
    cp.remove("sidecars.yaml");
    let status = cp
        .await_status("both sidecars to be told there is nothing for them", secs(10), |s| {
            s.mesh.version == good + 1 && s.sidecars.iter().all(|w| w.nack.is_some())
        })
        .await;
    for instance in ["web-0", "web-1"] {
        let refused = sidecar(&status, instance);
        assert_eq!((refused.acked_version, refused.pushed_version), (good, good + 1), "{refused:#?}");
        let reason = refused.nack.as_deref().unwrap();
        assert!(reason.contains("has no sidecar for service `web`"), "{reason}");
    }
    for sidecar in &web {
        assert_eq!(served_version(sidecar).await, good);
        assert_eq!(routed(sidecar, "api").await, "api-v1");
    }

    // Putting the file back is one more version, and they run it.
    cp.write("sidecars.yaml", &sidecars(&[("web", &["api"])]));
    cp.await_acked(2, good + 2, secs(10)).await;
    for sidecar in &web {
        assert_eq!(served_version(sidecar).await, good + 2);
    }
}

/// BUG (config/src/mesh.rs, `load_mesh`): a name defined in two files is reported twice, the second time with the
/// whole-mesh validation's message, whose cross-reference indexes the merged list rather than any file:
/// `teams.yaml: backends[0].name (line 2, column 3): backend name `api-v2` is already used by backends[1]` —
/// teams.yaml has no backends[1], and the backends[1] meant is routing.yaml's. Expected: the one error
/// `teams.yaml: backends[0].name ...: `api-v2` is also defined in routing.yaml`.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_defined_in_two_files_is_one_error() {
    let _shared = among_others().await;
    let dir = TempDir::new("attache-dup");
    std::fs::write(dir.path().join("routing.yaml"), routing("127.0.0.1:8081", "127.0.0.1:8082", "api-v1")).unwrap();
    let teams = "backends:\n  - { name: api-v2, endpoints: [\"127.0.0.1:8083\"] }\n";
    std::fs::write(dir.path().join("teams.yaml"), teams).unwrap();
    let (valid, text) = cli::check(dir.path());
    assert!(!valid, "{text}");
    let errors: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].starts_with("  teams.yaml: backends[0].name (line 2, column 3): "), "{text}");
    assert!(errors[0].ends_with("`api-v2` is also defined in routing.yaml"), "{text}");
}

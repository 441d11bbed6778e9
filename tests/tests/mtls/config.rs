//! TLS files in the config: a certificate, key or trust bundle that cannot be loaded makes the config invalid, with
//! the field path, for `attache-proxy check`, at startup and on reload (where the old config keeps serving).

use std::net::SocketAddr;

use attache_tests::pki::Ca;
use attache_tests::proxy::{self, ConfigFile};
use attache_tests::server;
use attache_tests::wait::secs;
use attache_tests::{client, eventually};

use super::{api_with_dns, https_as, inbound, outbound, API, WEB};

const MISSING: &str = "/nonexistent/attache-test/missing.pem";

/// Runs `attache-proxy <args…> FILE` on `yaml`; returns the exit code and the output.
async fn cli_on(args: &[&str], yaml: &str) -> (Option<i32>, String) {
    let file = ConfigFile::new(yaml).unwrap();
    let path = file.path().display().to_string();
    let args: Vec<&str> = args.iter().copied().chain([path.as_str()]).collect();
    let (status, out) = proxy::cli(&args, secs(60)).await.unwrap();
    (status.code(), out)
}

#[tokio::test(flavor = "multi_thread")]
async fn check_rejects_tls_files_that_cannot_be_loaded_naming_the_field() {
    let ca = Ca::new("example.org mesh");
    let (api, web, stranger) = (ca.workload(API), ca.workload(WEB), ca.workload(WEB));
    let app: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let server_side = inbound(&api, app).build();
    let client_side = outbound(&web).service("api", API, &[app]).build();
    let path = |p: std::path::PathBuf| p.display().to_string();

    // The files as generated load: the configs check ok.
    for yaml in [&server_side, &client_side] {
        let (code, out) = cli_on(&["check"], yaml).await;
        assert_eq!(code, Some(0), "{out}\n{yaml}");
    }

    let cases = [
        ("listeners[0].tls.cert", server_side.replace(&path(api.cert()), MISSING)),
        ("listeners[0].tls.key", server_side.replace(&path(api.key()), &path(stranger.key()))),
        ("listeners[0].tls.trust_bundle", server_side.replace(&path(api.bundle()), &path(api.key()))),
        ("backends[0].tls.trust_bundle", client_side.replace(&path(web.bundle()), MISSING)),
        ("backends[0].tls.cert", client_side.replace(&path(web.cert()), &path(web.key()))),
    ];
    for (field, yaml) in &cases {
        let (code, out) = cli_on(&["check"], yaml).await;
        assert_eq!(code, Some(1), "{field}: {out}\n{yaml}");
        assert!(out.contains(field), "the error does not name {field}:\n{out}");
        assert!(!out.contains("panicked"), "{out}");
    }
    let (_, out) = cli_on(&["check"], &cases[0].1).await;
    assert!(out.contains(MISSING), "the error does not name the missing file:\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_does_not_start_with_a_missing_certificate() {
    let ca = Ca::new("example.org mesh");
    let api = ca.workload(API);
    let app = server::http1().route("/", server::ok("app")).run().await;
    let yaml = inbound(&api, app.addr()).build().replace(&api.cert().display().to_string(), MISSING);

    let (code, out) = cli_on(&["run", "--config"], &yaml).await;
    assert_ne!(code, Some(0), "it started:\n{out}");
    assert!(code.is_some(), "killed by a signal:\n{out}");
    assert!(out.contains("listeners[0].tls.cert"), "{out}");
    assert_eq!(app.connections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_naming_a_missing_certificate_is_rejected_and_the_old_config_keeps_serving() {
    let ca = Ca::new("example.org mesh");
    let (api, web) = (api_with_dns(&ca), ca.workload(WEB));
    let app = server::auto().route_prefix("/", server::ok("app")).run().await;
    let yaml = inbound(&api, app.addr()).build();
    let proxy = proxy::new().config(yaml.clone()).run().await;
    let get = || https_as(proxy.inbound(), "/", &api.bundle(), &web).run();
    assert_eq!(get().await.unwrap().status, 200);

    proxy.write_config(&yaml.replace(&api.cert().display().to_string(), MISSING));
    let view = eventually(secs(10), || async {
        let view = proxy.config_view().await;
        (view["last_reload"]["result"] == "rejected").then_some(view)
    })
    .await;
    let errors = view["last_reload"]["errors"].to_string();
    assert!(errors.contains("listeners[0].tls.cert"), "{view:#}");
    let m = proxy.metrics().await;
    assert_eq!(m.sum("attache_config_reloads_total", &[("result", "rejected")]), 1.0, "{m}");

    // The last good config, certificate included, keeps serving.
    let rsp = get().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.text(), "app");
    let plain = client::curl().url(format!("http://{}/", proxy.inbound())).run().await;
    assert!(plain.is_err(), "still strict: {plain:?}");
}

//! The `attache-proxy` command line: `check` validates files and reports every error with its field path, line and
//! column; `demo` runs a sidecar with a 90/10 split and shows it.

use std::path::{Path, PathBuf};

use attache_tests::proxy::{self, ConfigFile};
use attache_tests::wait::secs;
use attache_tests::TempDir;

/// A valid config: 1 listener, 1 service with 2 routes, 2 backends.
const VALID: &str = r#"admin:
  address: 127.0.0.1:0
listeners:
  - name: outbound
    address: 127.0.0.1:0
    direction: outbound
services:
  - name: web
    hosts:
      - web.local
    routes:
      - name: api
        match:
          - path:
              prefix: /api
        backends:
          - name: api
      - name: default
        backends:
          - name: web
backends:
  - name: web
    endpoints:
      - 127.0.0.1:8080
  - name: api
    endpoints:
      - 127.0.0.1:8081
"#;

/// Three independent mistakes, in block style so each has an exact position.
const INVALID: &str = r#"admin:
  address: 127.0.0.1:0
limits:
  drain_timeout: soon
listeners:
  - name: outbound
    address: 127.0.0.1:0
    direction: outbound
services:
  - name: web
    hosts:
      - web.local
    routes:
      - name: default
        backends:
          - name: nowhere
backends:
  - name: web
    endpoints:
      - not an address
"#;

/// The 1-based line and column where `needle` first appears in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[tokio::test(flavor = "multi_thread")]
async fn check_prints_a_summary_for_a_valid_file() {
    let file = ConfigFile::new(VALID).unwrap();
    let path = file.path().display().to_string();
    let (status, out) = proxy::cli(&["check", &path], secs(30)).await.unwrap();
    assert!(status.success(), "{status}: {out}");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line summary: {out}");
    assert!(lines[0].starts_with(&path), "the summary does not name the file: {out}");
    assert!(lines[0].contains("ok"), "{out}");
    assert!(lines[0].contains("1 listeners, 1 services, 2 routes, 2 backends"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_every_error_with_path_line_and_column() {
    let file = ConfigFile::new(INVALID).unwrap();
    let path = file.path().display().to_string();
    let (status, out) = proxy::cli(&["check", &path], secs(30)).await.unwrap();
    assert!(!status.success(), "an invalid file passed: {out}");
    assert!(out.contains("3 errors"), "{out}");
    let expected = [
        ("limits.drain_timeout", position(INVALID, "drain_timeout"), "soon"),
        ("services[0].routes[0].backends[0].name", position(INVALID, "name: nowhere"), "nowhere"),
        ("backends[0].endpoints[0]", position(INVALID, "- not an address"), "not an address"),
    ];
    for (field, (line, column), value) in expected {
        let located = format!("{field} (line {line}, column {column})");
        let reported =
            out.lines().find(|l| l.contains(&located)).unwrap_or_else(|| panic!("no `{located}` in:\n{out}"));
        assert!(reported.contains(&path), "the error line does not name the file: {reported}");
        assert!(reported.contains(value), "the error does not show the bad value {value:?}: {reported}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_of_a_missing_file_says_so() {
    let file = ConfigFile::new(VALID).unwrap();
    let missing = file.path().with_file_name("does-not-exist.yaml").display().to_string();
    let (status, out) = proxy::cli(&["check", &missing], secs(30)).await.unwrap();
    assert!(!status.success(), "a missing file passed: {out}");
    assert!(out.contains(&missing), "the error does not name the file: {out}");
    assert!(out.contains("No such file or directory"), "the error does not say why: {out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_checks_ok() {
    let mut examples: Vec<_> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no examples in {}", examples_dir().display());
    // The mTLS examples name certificates under certs/, made the way their comments (and the README) say.
    let work = TempDir::new("attache-examples");
    for args in [
        &["certs", "init", "--dir", "certs/ca", "--trust-domain", "example.org"][..],
        &[
            "certs",
            "issue",
            "--ca-dir",
            "certs/ca",
            "--spiffe-id",
            "spiffe://example.org/ns/default/sa/api",
            "--out",
            "certs/api",
        ],
        &[
            "certs",
            "issue",
            "--ca-dir",
            "certs/ca",
            "--spiffe-id",
            "spiffe://example.org/ns/default/sa/web",
            "--out",
            "certs/web",
        ],
    ] {
        let (status, out) = proxy::cli_in(work.path(), args, secs(30)).await.unwrap();
        assert!(status.success(), "{args:?}: {status}\n{out}");
    }
    for example in &examples {
        let path = example.display().to_string();
        let (status, out) = proxy::cli_in(work.path(), &["check", &path], secs(30)).await.unwrap();
        assert!(status.success(), "{path}: {status}\n{out}");
        assert!(out.contains(&format!("{path}: ok")), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_shows_a_ninety_ten_split() {
    let args = ["demo", "--once", "--port", "0", "--admin-port", "0", "--requests", "2000"];
    let (status, out) = proxy::cli(&args, secs(60)).await.unwrap();
    assert!(status.success(), "{status}\n{out}");
    let split = out.split_once("Split over 2000 requests").unwrap_or_else(|| panic!("no split shown:\n{out}")).1;
    // `  stable     1803   90.2%  #####...`
    let row = |name: &str| -> (usize, f64) {
        let line = split
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{out}"));
        let mut cols = line.split_whitespace().skip(1);
        let count = cols.next().and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad row {line:?}"));
        let pct = cols.next().and_then(|c| c.trim_end_matches('%').parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
        (count, pct)
    };
    let (stable, stable_pct) = row("stable");
    let (canary, canary_pct) = row("canary");
    assert_eq!(stable + canary, 2000, "some requests went elsewhere:\n{out}");
    assert!((7.0..=13.0).contains(&canary_pct), "canary got {canary_pct}%:\n{out}");
    assert!((stable_pct + canary_pct - 100.0).abs() < 0.2, "{out}");
    assert!(!split.lines().any(|l| l.split_whitespace().next() == Some("error")), "failed requests:\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_rejects_a_duration_that_would_overflow_a_deadline() {
    let huge = VALID.replace("admin:\n", "limits:\n  detect_timeout: 18446744073709551615s\nadmin:\n");
    assert_ne!(huge, VALID);
    let file = ConfigFile::new(&huge).unwrap();
    let path = file.path().display().to_string();
    let (status, out) = proxy::cli(&["check", &path], secs(30)).await.unwrap();
    assert!(!status.success(), "an overflowing detect_timeout passed: {out}");
    let (line, column) = position(&huge, "detect_timeout");
    let reported = out
        .lines()
        .find(|l| l.contains("limits.detect_timeout"))
        .unwrap_or_else(|| panic!("no error names limits.detect_timeout:\n{out}"));
    assert!(reported.contains(&format!("line {line}, column {column}")), "{reported}");
    assert!(reported.contains("18446744073709551615s"), "the error does not show the bad value: {reported}");
    assert!(!out.contains("panicked"), "{out}");
}

//! `attache-proxy certs`: `init` creates a dev CA, `issue` a workload certificate whose only URI SAN is the SPIFFE ID,
//! as the real binary does it and as openssl sees it.

use std::path::Path;

use attache_tests::wait::secs;
use attache_tests::{proxy, TempDir};

const ID: &str = "spiffe://example.org/ns/default/sa/web";

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

async fn openssl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("openssl").args(args).output().await.expect("running openssl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openssl {args:?} failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn init_then_issue_writes_a_ca_and_a_spiffe_certificate() {
    let tmp = TempDir::new("attache-certs-test");
    let (ca, out) = (tmp.path().join("ca"), tmp.path().join("web"));

    let (status, text) =
        proxy::cli(&["certs", "init", "--dir", s(&ca), "--trust-domain", "example.org"], secs(60)).await.unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains(&format!("wrote {}", ca.join("ca.pem").display())), "{text}");
    assert!(text.contains(&format!("wrote {}", ca.join("ca-key.pem").display())), "{text}");
    assert!(text.contains("spiffe://example.org"), "{text}");

    let (status, text) = proxy::cli(
        &["certs", "issue", "--ca-dir", s(&ca), "--spiffe-id", ID, "--out", s(&out), "--days", "7"],
        secs(60),
    )
    .await
    .unwrap();
    assert!(status.success(), "{text}");
    for file in ["cert.pem", "key.pem", "bundle.pem"] {
        assert!(text.contains(&format!("wrote {}", out.join(file).display())), "{text}");
    }
    assert!(text.contains("serial: "), "{text}");
    assert!(text.contains("not after: "), "{text}");

    let cert = out.join("cert.pem");
    let san = openssl(&["x509", "-in", s(&cert), "-noout", "-ext", "subjectAltName"]).await;
    assert!(san.contains(&format!("URI:{ID}")), "{san}");
    assert_eq!(san.matches("URI:").count(), 1, "{san}");

    // The printed serial is the certificate's.
    let serial = openssl(&["x509", "-in", s(&cert), "-noout", "-serial"]).await;
    let serial = serial.trim().trim_start_matches("serial=").to_ascii_lowercase();
    let printed = text.lines().find_map(|l| l.strip_prefix("serial: ")).unwrap().replace(':', "");
    assert_eq!(printed, serial);

    // The leaf chains to the bundle for both TLS roles.
    for purpose in ["sslserver", "sslclient"] {
        let verify = openssl(&["verify", "-purpose", purpose, "-CAfile", s(&out.join("bundle.pem")), s(&cert)]).await;
        assert!(verify.contains("OK"), "{verify}");
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for key in [ca.join("ca-key.pem"), out.join("key.pem")] {
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_to_overwrite_and_issue_refuses_a_foreign_trust_domain() {
    let tmp = TempDir::new("attache-certs-test");
    let ca = tmp.path().join("ca");
    let init = ["certs", "init", "--dir", s(&ca), "--trust-domain", "example.org"];
    let (status, text) = proxy::cli(&init, secs(60)).await.unwrap();
    assert!(status.success(), "{text}");
    let before = std::fs::read(ca.join("ca.pem")).unwrap();

    let (status, text) = proxy::cli(&init, secs(60)).await.unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("already exists") && text.contains("--force"), "{text}");
    assert_eq!(std::fs::read(ca.join("ca.pem")).unwrap(), before);

    let forced: Vec<&str> = init.iter().copied().chain(["--force"]).collect();
    let (status, text) = proxy::cli(&forced, secs(60)).await.unwrap();
    assert!(status.success(), "{text}");
    assert_ne!(std::fs::read(ca.join("ca.pem")).unwrap(), before);

    let out = tmp.path().join("out");
    let foreign = "spiffe://other.org/ns/default/sa/web";
    let (status, text) =
        proxy::cli(&["certs", "issue", "--ca-dir", s(&ca), "--spiffe-id", foreign, "--out", s(&out)], secs(60))
            .await
            .unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("trust domain"), "{text}");
    assert!(!out.join("cert.pem").exists());
}

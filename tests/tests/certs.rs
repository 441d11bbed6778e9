//! `attache-proxy certs`: `init` creates a dev CA, `issue` a workload certificate whose only URI SAN is the SPIFFE ID,
//! as the real binary does it and as openssl sees it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use attache_tests::proxy;
use attache_tests::wait::secs;

const ID: &str = "spiffe://example.org/ns/default/sa/web";

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "attache-certs-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
    let tmp = TempDir::new();
    let (ca, out) = (tmp.0.join("ca"), tmp.0.join("web"));

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
    let tmp = TempDir::new();
    let ca = tmp.0.join("ca");
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

    let out = tmp.0.join("out");
    let foreign = "spiffe://other.org/ns/default/sa/web";
    let (status, text) =
        proxy::cli(&["certs", "issue", "--ca-dir", s(&ca), "--spiffe-id", foreign, "--out", s(&out)], secs(60))
            .await
            .unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("trust domain"), "{text}");
    assert!(!out.join("cert.pem").exists());
}

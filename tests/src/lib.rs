//! attache-tests: builder-style support for end-to-end tests of the proxy and its control plane.
//!
//! Everything binds `127.0.0.1:0` and reports its real address, every wait is bounded by a timeout, and every
//! spawned task is aborted when the handle that owns it is dropped. A test reads like a story:
//!
//! ```text
//! let backend = server::http1().name("stable").route("/", server::echo()).run().await;
//! let client = client::http1(backend.addr());
//! let rsp = client.get("svc.local", "/").await.unwrap();
//! assert_eq!(rsp.status, 200);
//! assert_eq!(backend.requests(), 1);
//! ```

mod binaries;
pub mod client;
pub mod collector;
pub mod faults;
pub mod mesh;
pub mod metrics;
pub mod netns;
pub mod pki;
pub mod proxy;
pub mod server;
mod tempdir;
pub mod wait;
pub mod yaml;

pub use self::client::TestResponse;
pub use self::metrics::Metrics;
pub use self::tempdir::TempDir;
pub use self::wait::{eventually, with_timeout};

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The error type of [`Body`]: anything that can be boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used by mock servers' responses and by the hyper clients' requests.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The default bound for any single wait in this crate (connect, request, read).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A body holding `bytes` in one data frame.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A body with no frames.
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// Installs a `tracing` subscriber honouring `RUST_LOG` (test-writer output). Safe to call from every test.
pub fn trace_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Aborts the task it owns when dropped, so nothing a test started outlives the test.
#[derive(Debug)]
pub struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    /// Spawns `fut` on the current runtime and guards it.
    pub fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(fut))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

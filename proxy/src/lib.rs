//! attache-proxy: the Attaché sidecar. Listeners detect the protocol of each connection and hand it to the
//! outbound or inbound HTTP pipeline (`http`) or the TCP forwarder (`tcp`); `dataplane` holds the routing state,
//! rebuilt from each config snapshot; `source` produces snapshots (a watched file); `admin` serves health, metrics
//! and the effective config.

pub mod admin;
pub mod backend;
pub mod backoff;
pub mod body;
pub mod certs;
pub mod dataplane;
pub mod demo;
pub mod detect;
pub mod drain;
pub mod errors;
pub mod fdtable;
pub mod fswatch;
pub mod http;
pub mod init;
pub mod io;
pub mod listener;
pub mod metrics;
pub mod persist;
pub mod process;
pub mod proxy;
pub mod redirect;
pub mod source;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod wire;

pub use proxy::{Proxy, ProxyHandle};

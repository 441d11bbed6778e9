//! Services by host, for routing every request: `Snapshot::service_index_for` in a hash lookup instead of a scan
//! of every service's hosts (O(services) per request, and a mesh has hundreds).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::{split_authority, HostMatch, Service};
use crate::validate::{fnv1a_continue, FNV1A_OFFSET};

/// Longest authority looked up without allocating its lower-cased key (a DNS name is at most 253 bytes).
const KEY_MAX: usize = 272;

/// The answer of `Snapshot::service_index_for` for the same services: the first service, in order, with a host
/// that matches.
#[derive(Clone, Debug, Default)]
pub struct HostIndex {
    /// Lower-cased exact host (with its port, when it has one) -> the first service that lists it.
    exact: HashMap<Box<str>, usize, BuildHasherDefault<Fnv>>,
    /// `(service, suffix)` for every `*.` host, in service order.
    suffixes: Vec<(usize, Box<str>)>,
    /// The longest key in `exact`: a longer authority (a client's choice) is not lower-cased to be looked up.
    longest: usize,
    /// Some key in `exact` has a port: only then can an authority with its port match as it is.
    ported: bool,
}

impl HostIndex {
    pub fn new(services: &[Arc<Service>]) -> Self {
        let mut index = Self::default();
        for (i, service) in services.iter().enumerate() {
            for host in &service.hosts {
                match host {
                    HostMatch::Exact(want) => {
                        index.longest = index.longest.max(want.len());
                        // As `find_normalized` tells an authority with a port: anything after the host.
                        index.ported |= split_authority(want).0.len() != want.len();
                        index.exact.entry(want.to_ascii_lowercase().into()).or_insert(i);
                    }
                    HostMatch::Suffix(suffix) => index.suffixes.push((i, suffix.to_ascii_lowercase().into())),
                }
            }
        }
        index
    }

    /// The index of the service for `authority` (`host` or `host:port`, any case; a fully qualified `host.` is
    /// the same host).
    pub fn find(&self, authority: &str) -> Option<usize> {
        let (host, port) = split_authority(authority);
        if !host.ends_with('.') {
            return self.find_normalized(authority, host);
        }
        let host = host.trim_end_matches('.');
        match port {
            Some(port) => {
                let authority = format!("{host}:{port}");
                self.find_normalized(&authority, host)
            }
            None => self.find_normalized(host, host),
        }
    }

    /// `host` is `authority` without its port. An exact host matches either (see `HostMatch::matches`: one with a
    /// port matches only that authority, one without it the host at any port), so both keys are looked up.
    fn find_normalized(&self, authority: &str, host: &str) -> Option<usize> {
        let exact = |key: &str| match key.len() <= self.longest {
            true => with_lowercase(key, |k| self.exact.get(k).copied()),
            false => None,
        };
        let has_port = host.len() != authority.len();
        let mut best = if has_port && !self.ported { None } else { exact(authority) };
        if has_port {
            best = min(best, exact(host));
        }
        let suffix = self
            .suffixes
            .iter()
            .take_while(|(i, _)| best.is_none_or(|b| *i < b))
            .find(|(_, s)| super::ends_with_ignore_case(host, s));
        min(best, suffix.map(|(i, _)| *i))
    }
}

fn min(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The exact-host table's hash: FNV-1a, a third of SipHash's cost for a host name. Unkeyed is safe here: the keys
/// are the config's hosts, so a client's authority can only be looked up, never fill the table with collisions.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(FNV1A_OFFSET)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_continue(self.0, bytes);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Calls `f` with `s` lower-cased: `s` itself when it has no upper case (as clients send hosts), else a copy on
/// the stack when it fits.
fn with_lowercase<T>(s: &str, f: impl FnOnce(&str) -> T) -> T {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(s);
    }
    let mut buf = [0u8; KEY_MAX];
    match buf.get_mut(..s.len()) {
        Some(key) => {
            key.copy_from_slice(s.as_bytes());
            key.make_ascii_lowercase();
            // ASCII lower-casing keeps UTF-8 valid, so this cannot fail; the owned path is the fallback anyway.
            match std::str::from_utf8(key) {
                Ok(key) => f(key),
                Err(_) => f(&s.to_ascii_lowercase()),
            }
        }
        None => f(&s.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Snapshot;

    fn snapshot() -> Snapshot {
        let yaml = r#"
services:
  - name: pinned
    hosts: ["api.local:8080", "[::1]:9000"]
    routes: [{ name: r, backends: [{ name: b }] }]
  - name: wild
    hosts: ["*.svc.local", "Mixed.Case"]
    routes: [{ name: r, backends: [{ name: b }] }]
  - name: api
    hosts: ["api.local", "127.0.0.1", "x.svc.local", "[::1]"]
    routes: [{ name: r, backends: [{ name: b }] }]
  - name: later-wild
    hosts: ["*.local", "other.local", "[::2]."]
    routes: [{ name: r, backends: [{ name: b }] }]
backends:
  - { name: b, endpoints: ["127.0.0.1:1"] }
"#;
        crate::load_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every authority gets the service the reference scan (`Snapshot::service_index_for`) picks, with hosts
    /// listed with ports and, in a config whose hosts have none (the lookup with the port is skipped), without.
    #[test]
    fn the_index_answers_as_the_scan_does() {
        let keep = |drop: &[&str]| {
            let mut s = snapshot();
            s.services.retain(|s| !drop.contains(&s.name.as_ref()));
            s
        };
        // Without "pinned", the one host with more than a host name is "[::2]." (text after the brackets).
        let (with_ports, with_suffix, plain) = (keep(&[]), keep(&["pinned"]), keep(&["pinned", "later-wild"]));
        assert!(HostIndex::new(&with_suffix.services).ported);
        assert!(!HostIndex::new(&plain.services).ported);
        for snapshot in [with_ports, with_suffix, plain] {
            answers_as_the_scan_does(&snapshot);
        }
        let snapshot = snapshot();
        let index = HostIndex::new(&snapshot.services);
        assert!(index.ported);
        let long = format!("{}.svc.local", "a".repeat(400));
        assert_eq!(index.find(&long), Some(1), "a key longer than the stack buffer");
        assert_eq!(index.find("api.local:8080"), Some(0));
        assert_eq!(index.find("api.local:80"), Some(2));
        assert_eq!(index.find("x.svc.local"), Some(1), "an earlier suffix wins over a later exact host");
        assert_eq!(index.find("q.local"), Some(3));
        assert_eq!(index.find("éa.svc.local"), Some(1), "a non-ASCII host is compared by bytes, without a panic");
        assert_eq!(index.find("é"), None);
    }

    fn answers_as_the_scan_does(snapshot: &Snapshot) {
        let index = HostIndex::new(&snapshot.services);
        let hosts = [
            "api.local",
            "API.LOCAL",
            "api.local.",
            "x.svc.local",
            "y.svc.local",
            "svc.local",
            "a.b.svc.local",
            "other.local",
            "local",
            "mixed.case",
            "MIXED.case.",
            "127.0.0.1",
            "[::1]",
            "[::1",
            "[::2]",
            "[::2].",
            "nowhere",
            "",
            "a:b:c",
        ];
        let ports = ["", ":8080", ":9000", ":80", ":"];
        for host in hosts {
            for port in ports {
                let authority = format!("{host}{port}");
                assert_eq!(index.find(&authority), snapshot.service_index_for(&authority), "{authority:?}");
            }
        }
    }
}

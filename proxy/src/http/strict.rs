//! HTTP/1 strictness beyond hyper's defaults, and hop-by-hop header hygiene in both directions.
//!
//! Rejected with 400 and the connection closed: Content-Length together with Transfer-Encoding (seen by the
//! connection's `H1Guard`, since hyper hides it), any Transfer-Encoding other than exactly `chunked`, and HTTP/1.1
//! without Host. Hop-by-hop headers never cross the proxy.

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Version};

use super::h1_guard::HeadVerdict;
use super::meta::Downstream;
use super::stage::{fail, Middleware, StageFuture};
use crate::body::Body;
use crate::errors::{BadRequest, BoxError, Unsupported};

/// `Connection: close` is an option, but a field of that name would be listed by it.
static CLOSE: HeaderName = HeaderName::from_static("close");
/// Always hop-by-hop (RFC 9110 7.6.1), besides whatever `Connection` names. Transfer-Encoding is framing of one
/// hop: hyper frames each side itself. `TE` is hop-by-hop too, but `TE: trailers` survives (below). `ALWAYS` and
/// the length filter are both made from this one list.
const ALWAYS_NAMES: [&str; 8] = [
    "connection",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
    "transfer-encoding",
    "keep-alive",
    "proxy-connection",
];
// A static, not a const: a const array is built (and dropped, eight names' drop glue) at every use. `from_static`
// gives the standard names their standard form, so they compare as an enum tag.
static ALWAYS: [HeaderName; 8] = [
    HeaderName::from_static(ALWAYS_NAMES[0]),
    HeaderName::from_static(ALWAYS_NAMES[1]),
    HeaderName::from_static(ALWAYS_NAMES[2]),
    HeaderName::from_static(ALWAYS_NAMES[3]),
    HeaderName::from_static(ALWAYS_NAMES[4]),
    HeaderName::from_static(ALWAYS_NAMES[5]),
    HeaderName::from_static(ALWAYS_NAMES[6]),
    HeaderName::from_static(ALWAYS_NAMES[7]),
];
/// Bit `n` set: some name of `ALWAYS`, or `TE`, is `n` bytes long.
const HOP_BY_HOP_LENGTHS: u32 = {
    let (mut bits, mut i) = (1u32 << "te".len(), 0);
    while i < ALWAYS_NAMES.len() {
        bits |= 1 << ALWAYS_NAMES[i].len();
        i += 1;
    }
    bits
};
/// Bits of `ALWAYS` by index.
const CONNECTION_BIT: u8 = 1;
const UPGRADE_BIT: u8 = 2;

/// The index of `name` in `ALWAYS`, as a bit. Standard names compare as an enum tag, the two others by text.
fn always_bit(name: &HeaderName) -> u8 {
    ALWAYS.iter().position(|n| n == name).map_or(0, |i| 1 << i)
}

/// Headers only the proxy may set; a client's copies are dropped inbound.
const OWN_PREFIX: &str = "x-attache-";

/// HTTP/1 strictness and hop-by-hop hygiene; inbound also drops client-sent `x-attache-*` headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Strict {
    pub inbound: bool,
}

impl Middleware for Strict {
    fn call<S>(&self, mut req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        if let Err(e) = check(&req) {
            return fail(e);
        }
        let upgrading = super::upgrade::is_upgrade(&req);
        strip_hop_by_hop(req.headers_mut(), upgrading);
        if self.inbound {
            strip_own_headers(req.headers_mut());
        }
        StageFuture::map(next.call(req), strip_response)
    }
}

fn strip_response(rsp: &mut Response<Body>) {
    let switching = rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(rsp.headers_mut(), switching);
}

/// The request-framing rules hyper does not enforce itself.
pub fn check<B>(req: &Request<B>) -> Result<(), BoxError> {
    if req.method() == http::Method::CONNECT {
        return Err(Unsupported { what: "CONNECT tunnels" }.into());
    }
    // One lookup answers both: is there a Host, is there more than one.
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let has_host = hosts.next().is_some();
    if hosts.next().is_some() {
        return Err(BadRequest { reason: "more than one Host header" }.into());
    }
    Ok(check_framing(req, has_host)?)
}

fn check_framing<B>(req: &Request<B>, has_host: bool) -> Result<(), BadRequest> {
    match Downstream::of(req).and_then(|d| d.verdict) {
        Some(HeadVerdict::ContentLengthWithTransferEncoding) => {
            return Err(BadRequest { reason: "both Content-Length and Transfer-Encoding" })
        }
        Some(HeadVerdict::InvalidTransferEncoding) => {
            return Err(BadRequest { reason: "Transfer-Encoding other than chunked" })
        }
        _ => {}
    }
    let mut te = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        let chunked = first.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !chunked || te.next().is_some() {
            return Err(BadRequest { reason: "Transfer-Encoding other than chunked" });
        }
        if req.headers().contains_key(header::CONTENT_LENGTH) {
            return Err(BadRequest { reason: "both Content-Length and Transfer-Encoding" });
        }
    }
    if req.version() == Version::HTTP_11 && !has_host {
        return Err(BadRequest { reason: "HTTP/1.1 request without Host" });
    }
    Ok(())
}

fn strip_own_headers(headers: &mut HeaderMap) {
    let own: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with(OWN_PREFIX)).cloned().collect();
    for name in own {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers. `TE: trailers` survives (gRPC needs it); while switching protocols, `Upgrade` and
/// `Connection: upgrade` survive. One pass over the names finds whether there is anything to do, so a message
/// without hop-by-hop headers (every HTTP/2 one, most HTTP/1.1 ones) costs no lookups.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    let (mut present, mut te) = (0u8, false);
    for name in headers.keys() {
        // Most names cannot be one of them by their length alone.
        let len = name.as_str().len();
        if len < 32 && HOP_BY_HOP_LENGTHS & (1 << len) != 0 {
            present |= always_bit(name);
            te |= name == header::TE;
        }
    }
    if present & CONNECTION_BIT != 0 {
        strip_listed(headers, upgrading);
    }
    if upgrading {
        present &= !(CONNECTION_BIT | UPGRADE_BIT);
    }
    for (i, name) in ALWAYS.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if upgrading {
        headers.insert(header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    }
    if te {
        strip_te(headers);
    }
}

/// The names `Connection` lists (the always hop-by-hop ones are removed by the caller). Only a listed name that is
/// present becomes a `HeaderName`: the usual `keep-alive` and `close` cost no allocation.
fn strip_listed(headers: &mut HeaderMap, upgrading: bool) {
    // The usual values name nothing left to remove (`keep-alive` and `upgrade` are always hop-by-hop, or kept
    // while upgrading; a field named `close` is rare): a whole value compared answers without splitting tokens.
    let close_field = || headers.contains_key(&CLOSE);
    let names_none = |v: &http::HeaderValue| {
        let v = v.as_bytes();
        v.eq_ignore_ascii_case(b"keep-alive")
            || v.eq_ignore_ascii_case(b"upgrade")
            || (v.eq_ignore_ascii_case(b"close") && !close_field())
    };
    if headers.get_all(header::CONNECTION).iter().all(names_none) {
        return;
    }
    let always = |t: &str| ALWAYS.iter().any(|n| n.as_str().eq_ignore_ascii_case(t));
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            let skip = always(t) || (upgrading && t.eq_ignore_ascii_case("upgrade"));
            !skip && headers.contains_key(*t)
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// `TE` keeps only `trailers`, and only when it was asked for, spelled as HTTP/2 requires it (RFC 9113 section
/// 8.2.2: `h2` refuses any other value, `Trailers` included).
fn strip_te(headers: &mut HeaderMap) {
    let exactly_trailers = headers.get_all(header::TE).iter().all(|v| v == "trailers");
    if !exactly_trailers {
        let keep = headers
            .get_all(header::TE)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
        headers.remove(header::TE);
        if keep {
            headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version).uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn rejects_framing_ambiguities() {
        assert!(check(&req(Version::HTTP_11, &[("host", "a")])).is_ok());
        assert!(check(&req(Version::HTTP_11, &[])).is_err());
        assert!(check(&req(Version::HTTP_10, &[])).is_ok());
        assert!(check(&req(Version::HTTP_11, &[("host", "a"), ("transfer-encoding", "gzip, chunked")])).is_err());
        assert!(check(&req(Version::HTTP_11, &[("host", "a"), ("transfer-encoding", "chunked")])).is_ok());
        let mut r = req(Version::HTTP_11, &[("host", "a")]);
        let conn = std::sync::Arc::new(super::super::meta::Connection {
            addr: ([127, 0, 0, 1], 1).into(),
            original_dst: None,
            identity: None,
        });
        let verdict = Some(HeadVerdict::ContentLengthWithTransferEncoding);
        super::super::meta::RequestMeta::insert_for_test(&mut r, Some(Downstream { conn, verdict }), None);
        assert!(check(&r).is_err());
    }

    #[test]
    fn strips_hop_by_hop_but_keeps_te_trailers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers, deflate"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-kept"]);
        assert_eq!(h["te"], "trailers");
        let mut h = HeaderMap::new();
        h.insert("te", "Trailers".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers", "the one spelling HTTP/2 takes");
    }

    #[test]
    fn the_usual_connection_values_strip_only_what_they_name() {
        let strip = |pairs: &[(&str, &str)], upgrading| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            strip_hop_by_hop(&mut h, upgrading);
            let mut names: Vec<String> = h.keys().map(|k| k.to_string()).collect();
            names.sort_unstable();
            names
        };
        assert_eq!(strip(&[("connection", "Keep-Alive"), ("keep-alive", "timeout=5"), ("x", "1")], false), ["x"]);
        assert_eq!(strip(&[("connection", "close"), ("x", "1")], false), ["x"]);
        // A field named by the option goes, even one called `close`.
        assert_eq!(strip(&[("connection", "close"), ("close", "1"), ("x", "1")], false), ["x"]);
        assert_eq!(strip(&[("connection", "keep-alive"), ("connection", "x"), ("x", "1"), ("y", "1")], false), ["y"]);
        assert_eq!(strip(&[("connection", "upgrade"), ("upgrade", "websocket")], false), Vec::<String>::new());
        assert_eq!(strip(&[("connection", "upgrade"), ("upgrade", "websocket")], true), ["connection", "upgrade"]);
    }

    #[test]
    fn the_length_filter_knows_every_hop_by_hop_name() {
        for name in ALWAYS.iter().chain([&header::TE]) {
            assert_ne!(HOP_BY_HOP_LENGTHS & (1 << name.as_str().len()), 0, "{name}");
        }
    }

    #[test]
    fn keeps_upgrade_headers_when_upgrading() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }
}

//! Checks of single scalar fields: addresses, names, ports, header names and values.

use std::net::SocketAddr;

use http::{HeaderName, HeaderValue};

/// `IP:port`.
pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("invalid address `{text}`: expected `IP:port`, e.g. `127.0.0.1:4140` or `[::1]:4140`"))
}

/// A name used in metrics and logs: 1 to 63 of `A-Z a-z 0-9 . _ -`. Bounded, so label values stay small, and free of
/// `:`, which the proxy uses for its own internal names (`app:<listener>`).
pub(super) fn name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if text.len() > 63 || !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(format!("name `{text}` must be 1 to 63 characters of letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

/// A port number, 1 to 65535.
pub(super) fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("invalid port `{text}`: expected a number from 1 to 65535")),
    }
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, not ending in an all-digit label (which is
/// more likely a mistyped IP address).
pub(super) fn is_dns_name(host: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let numeric_tld = host.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    (1..=253).contains(&host.len()) && host.split('.').all(label_ok) && !numeric_tld
}

pub(super) fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("invalid header name `{text}`"))
}

pub(super) fn header_value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text)
        .map_err(|_| format!("invalid header value `{text}`: control characters are not allowed"))
}

/// A cookie name: an HTTP token (RFC 6265).
pub(super) fn cookie_name(text: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
    if text.is_empty() || !text.bytes().all(token) {
        return Err(format!("invalid cookie name `{text}`: expected letters, digits and `!#$%&'*+-.^_`|~`"));
    }
    Ok(())
}

/// A URI path: starts with `/`, no query, fragment, whitespace or control characters.
pub(super) fn uri_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("path `{text}` must start with `/`"));
    }
    if text.contains(['?', '#']) || text.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(format!("invalid path `{text}`: no query, fragment, spaces or control characters"));
    }
    Ok(())
}

/// A path prefix as the model stores it: without a trailing `/` (`/` itself becomes the empty string).
pub(super) fn trim_prefix(prefix: &str) -> String {
    prefix.trim_end_matches('/').to_owned()
}

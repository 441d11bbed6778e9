//! Head analysis: the verdict on one request head and how its body is framed, by hyper's rules.

use std::mem::MaybeUninit;

use super::HeadVerdict;

/// How the body after a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What to do after a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Push the verdict, then skip the body and expect the next head.
    Continue(HeadVerdict, Framing),
    /// Push the verdict, then stop tracking.
    Last(HeadVerdict),
    /// hyper rejects the head (or we cannot follow it): stop without a verdict.
    Abandon,
}

/// Header arrays up to this size live on the stack (uninitialised, no memset).
const STACK_HEADERS: usize = 128;
/// Parses a complete head (ending with its empty line) and decides what follows.
pub(super) fn analyze(head: &[u8], max_headers: usize) -> Outcome {
    if max_headers <= STACK_HEADERS {
        let mut headers = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        analyze_with(head, &mut headers[..max_headers])
    } else {
        let mut headers = Vec::new();
        headers.resize_with(max_headers, MaybeUninit::uninit);
        analyze_with(head, &mut headers)
    }
}

fn analyze_with<'b>(head: &'b [u8], headers: &mut [MaybeUninit<httparse::Header<'b>>]) -> Outcome {
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, headers) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        // hyper answers parse errors itself; a length mismatch means we lost track.
        _ => return Outcome::Abandon,
    }
    let is_http_11 = req.version == Some(1);
    let mut te_fields = 0usize;
    let mut te_exactly_chunked = false;
    let mut content_length: Option<u64> = None;
    let mut cl_invalid = false;
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_fields += 1;
            te_exactly_chunked = trim(h.value).eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match (digits(h.value), content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(prev)) if n == prev => {}
                _ => cl_invalid = true,
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= is_http_11;
        }
    }
    let has_cl = content_length.is_some() || cl_invalid;
    if te_fields > 0 {
        let verdict = if has_cl {
            HeadVerdict::ContentLengthWithTransferEncoding
        } else if te_fields > 1 || !te_exactly_chunked {
            HeadVerdict::InvalidTransferEncoding
        } else {
            HeadVerdict::Ok
        };
        // After a bad verdict the service closes the connection; hyper rejects TE on
        // HTTP/1.0 itself.
        if verdict != HeadVerdict::Ok || upgrade || !is_http_11 {
            return Outcome::Last(verdict);
        }
        return Outcome::Continue(verdict, Framing::Chunked);
    }
    if cl_invalid {
        // Invalid or differing Content-Length: hyper answers 400 itself.
        return Outcome::Abandon;
    }
    if upgrade {
        return Outcome::Last(HeadVerdict::Ok);
    }
    let framing = content_length.map_or(Framing::None, Framing::Length);
    Outcome::Continue(HeadVerdict::Ok, framing)
}

/// Strips optional whitespace (SP / HTAB) around a field value or list element.
fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// A `Content-Length` value as hyper accepts it: ASCII digits only, no overflow.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

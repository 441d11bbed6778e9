//! Trace context on the wire: W3C `traceparent`/`tracestate` and B3 (multi-header and single `b3`), parsed strictly
//! and written back in the forms a request arrived in. Nothing invalid is ever forwarded as it came.

use std::fmt;

use attache_config::model::Propagation;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::writer::Writer;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Every header this module reads; all are removed before the proxy writes its own. A static, not a const: a const
/// array is built (and dropped) at every use.
static ALL: [HeaderName; 8] =
    [TRACEPARENT, TRACESTATE, B3, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_FLAGS];

/// Which of `ALL` the headers carry, as bits by index: one pass over the names, where looking each of them up
/// would hash eight custom names per request (most requests carry none or one of them).
fn present(headers: &HeaderMap) -> u8 {
    let mut bits = 0u8;
    for name in headers.keys() {
        // Every trace header starts with one of these; standard names (most of a request's) stop here.
        if !matches!(name.as_str().as_bytes().first(), Some(b't' | b'b' | b'x')) {
            continue;
        }
        if let Some(i) = ALL.iter().position(|n| n == name) {
            bits |= 1 << i;
        }
    }
    bits
}

/// Bits of `ALL` by index, as `present` returns them.
const TRACEPARENT_BIT: u8 = 1 << 0;
const B3_BIT: u8 = 1 << 2;
/// `x-b3-traceid`, `-spanid`, `-sampled` and `-flags` (not `-parentspanid`: alone it is no context).
const B3_MULTI_BITS: u8 = 1 << 3 | 1 << 4 | 1 << 6 | 1 << 7;

/// The longest `tracestate` propagated (W3C: at least 512 characters must be carried).
const MAX_TRACESTATE: usize = 512;
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A 128-bit trace ID, never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

/// A 64-bit span ID, never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

/// The context a request arrived with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's trace and span, when a valid one came.
    pub parent: Option<Parent>,
    /// A sampling decision that came (with IDs or alone, as `b3: 0`); `None` leaves it to this proxy.
    pub sampled: Option<bool>,
    /// B3 debug: sample and say so.
    pub debug: bool,
    /// The forms trace headers came in, valid or not; empty when none came.
    pub forms: Propagation,
    /// A valid `tracestate` that belongs to `parent` (normalized).
    pub tracestate: Option<HeaderValue>,
    /// The trace ID came as 64-bit B3, and is written back so.
    pub short_trace_id: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

/// What the proxy writes: its own span in the caller's trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The span `span_id` is a child of (for `X-B3-ParentSpanId`).
    pub parent_span_id: Option<SpanId>,
    pub sampled: bool,
    pub debug: bool,
    pub forms: Propagation,
    pub tracestate: Option<HeaderValue>,
    pub short_trace_id: bool,
}

impl TraceId {
    pub fn random() -> Self {
        loop {
            let id: u128 = rand::random();
            if id != 0 {
                return Self(id);
            }
        }
    }
}

impl SpanId {
    pub fn random() -> Self {
        loop {
            let id: u64 = rand::random();
            if id != 0 {
                return Self(id);
            }
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Lowercase hex of exactly `len` digits (W3C and B3 both forbid uppercase).
fn hex(text: &str, len: usize) -> Option<u128> {
    let lower = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if text.len() != len || !text.bytes().all(lower) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

fn trace_id(text: &str, len: usize) -> Option<TraceId> {
    hex(text, len).filter(|&v| v != 0).map(TraceId)
}

fn span_id(text: &str) -> Option<SpanId> {
    hex(text, 16).and_then(|v| u64::try_from(v).ok()).filter(|&v| v != 0).map(SpanId)
}

/// The one value of `name`, as text; absent, repeated or not ASCII is `Err(())` when present at all.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Result<&'h str, ()>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err(()));
    }
    Some(first.to_str().map(str::trim).map_err(|_| ()))
}

/// `traceparent` per W3C Trace Context level 1: `version-traceid-spanid-flags`, lowercase hex, no zero IDs,
/// version `ff` invalid, version `00` exactly four fields; a later version may add fields after a `-`.
pub fn parse_traceparent(text: &str) -> Option<(Parent, bool)> {
    let bytes = text.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = hex(&text[..2], 2)?;
    if version == 0xff || (version == 0 && bytes.len() != 55) || (bytes.len() > 55 && bytes[55] != b'-') {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id = trace_id(&text[3..35], 32)?;
    let span_id = span_id(&text[36..52])?;
    let flags = hex(&text[53..55], 2)?;
    Some((Parent { trace_id, span_id }, flags & 1 == 1))
}

/// `tracestate`: up to 32 `key=value` members, keys unique; returned normalized (no empty members or spaces
/// around them) and cut to 512 characters the way W3C says (long members first, then from the end).
pub fn parse_tracestate<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<HeaderValue> {
    let mut members: Vec<&str> = Vec::new();
    for value in values {
        for member in value.to_str().ok()?.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (key, val) = member.split_once('=')?;
            if !valid_key(key)
                || !valid_value(val)
                || members.iter().any(|m| m.split_once('=').map(|p| p.0) == Some(key))
            {
                return None;
            }
            members.push(member);
        }
    }
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    let joined_len = |m: &[&str]| m.iter().map(|s| s.len()).sum::<usize>() + m.len().saturating_sub(1);
    while joined_len(&members) > MAX_TRACESTATE {
        match members.iter().rposition(|m| m.len() > 128) {
            Some(i) => members.remove(i),
            None => members.pop().unwrap_or_default(),
        };
    }
    HeaderValue::from_str(&members.join(",")).ok()
}

fn valid_key(key: &str) -> bool {
    let rest = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/');
    let simple = |k: &str, first: fn(u8) -> bool, max: usize| {
        k.len() <= max && k.bytes().next().is_some_and(first) && k.bytes().skip(1).all(rest)
    };
    match key.split_once('@') {
        None => simple(key, |b| b.is_ascii_lowercase(), 256),
        Some((tenant, system)) => {
            simple(tenant, |b| b.is_ascii_lowercase() || b.is_ascii_digit(), 241)
                && simple(system, |b| b.is_ascii_lowercase(), 14)
        }
    }
}

fn valid_value(value: &str) -> bool {
    value.len() <= 256
        && !value.ends_with(' ')
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

/// What B3 said: the caller's IDs (and whether the trace ID was 64-bit), the sampling decision, debug.
type B3Read = (Option<(Parent, bool)>, Option<bool>, bool);

/// B3 single header: `{trace}-{span}[-{sampled}[-{parent}]]`, or a sampling decision alone (`0`, `1`, `d`).
fn parse_b3_single(text: &str) -> Option<B3Read> {
    let decision = |s: &str| match s {
        "0" => Some((Some(false), false)),
        "1" => Some((Some(true), false)),
        "d" => Some((Some(true), true)),
        _ => None,
    };
    let parts: Vec<&str> = text.split('-').collect();
    if let [only] = parts[..] {
        let (sampled, debug) = decision(only)?;
        return Some((None, sampled, debug));
    }
    let (trace, span) = (parts.first()?, parts.get(1)?);
    let short = trace.len() == 16;
    if parts.len() > 4 || parts.get(3).is_some_and(|p| span_id(p).is_none()) {
        return None;
    }
    let parent = Parent { trace_id: trace_id(trace, if short { 16 } else { 32 })?, span_id: span_id(span)? };
    let (sampled, debug) = match parts.get(2) {
        Some(s) => decision(s)?,
        None => (None, false),
    };
    Some((Some((parent, short)), sampled, debug))
}

/// B3 multiple headers. `X-B3-Sampled` alone is a decision without IDs; IDs need both trace and span.
fn parse_b3_multi(headers: &HeaderMap) -> Option<B3Read> {
    let debug = match single(headers, &B3_FLAGS) {
        None => false,
        Some(Ok("1")) => true,
        Some(Ok("0")) => false,
        Some(_) => return None,
    };
    let sampled = match single(headers, &B3_SAMPLED) {
        None => None,
        Some(Ok(v)) if v == "1" || v.eq_ignore_ascii_case("true") => Some(true),
        Some(Ok(v)) if v == "0" || v.eq_ignore_ascii_case("false") => Some(false),
        Some(_) => return None,
    };
    let sampled = if debug { Some(true) } else { sampled };
    let ids = match (single(headers, &B3_TRACE_ID), single(headers, &B3_SPAN_ID)) {
        (None, None) => None,
        (Some(Ok(trace)), Some(Ok(span))) => {
            let short = trace.len() == 16;
            let parent = Parent { trace_id: trace_id(trace, if short { 16 } else { 32 })?, span_id: span_id(span)? };
            if let Some(p) = single(headers, &B3_PARENT_SPAN_ID) {
                span_id(p.ok()?)?;
            }
            Some((parent, short))
        }
        _ => return None,
    };
    Some((ids, sampled, debug))
}

/// Reads the request's trace context. Precedence when several forms came: `traceparent`, then `b3`, then the
/// `X-B3-*` headers; the first valid one is continued, and every form that came is written back.
pub fn extract(headers: &HeaderMap) -> Incoming {
    let bits = present(headers);
    let forms =
        Propagation { w3c: bits & TRACEPARENT_BIT != 0, b3: bits & B3_BIT != 0, b3multi: bits & B3_MULTI_BITS != 0 };
    let mut incoming =
        Incoming { parent: None, sampled: None, debug: false, forms, tracestate: None, short_trace_id: false };
    if bits == 0 {
        return incoming;
    }
    let w3c = match single(headers, &TRACEPARENT) {
        Some(Ok(text)) => parse_traceparent(text),
        _ => None,
    };
    if let Some((parent, sampled)) = w3c {
        incoming.parent = Some(parent);
        incoming.sampled = Some(sampled);
        incoming.tracestate = parse_tracestate(headers.get_all(TRACESTATE).iter());
        return incoming;
    }
    let b3 = match single(headers, &B3) {
        Some(Ok(text)) => parse_b3_single(text),
        _ => None,
    };
    if let Some((ids, sampled, debug)) = b3.or_else(|| forms.b3multi.then(|| parse_b3_multi(headers)).flatten()) {
        if let Some((parent, short)) = ids {
            incoming.parent = Some(parent);
            incoming.short_trace_id = short;
        }
        incoming.sampled = sampled;
        incoming.debug = debug;
    }
    incoming
}

/// Writes `out` into `headers` in its forms. `clear` first removes every trace header (a request's own, which may
/// be invalid); an attempt that rewrites what its hop wrote, in the same forms, need not.
pub fn inject(headers: &mut HeaderMap, out: &Outgoing, clear: bool) {
    if clear {
        let bits = present(headers);
        for (i, name) in ALL.iter().enumerate() {
            if bits & (1 << i) != 0 {
                headers.remove(name);
            }
        }
    }
    let mut buf = [0u8; 128];
    let sampled = if out.debug {
        b'd'
    } else if out.sampled {
        b'1'
    } else {
        b'0'
    };
    let trace_digits = if out.short_trace_id { 16 } else { 32 };
    if out.forms.w3c {
        let mut w = Writer::new(&mut buf);
        w.put(b"00-").hex(out.trace_id.0, 32).put(b"-").hex(u128::from(out.span_id.0), 16).put(b"-0");
        w.put(&[if out.sampled { b'1' } else { b'0' }]);
        w.insert(headers, TRACEPARENT);
        if let Some(state) = &out.tracestate {
            headers.insert(TRACESTATE, state.clone());
        }
    }
    if out.forms.b3 {
        let mut w = Writer::new(&mut buf);
        w.hex(out.trace_id.0, trace_digits).put(b"-").hex(u128::from(out.span_id.0), 16).put(b"-").put(&[sampled]);
        if let Some(p) = out.parent_span_id {
            w.put(b"-").hex(u128::from(p.0), 16);
        }
        w.insert(headers, B3);
    }
    if out.forms.b3multi {
        Writer::new(&mut buf).hex(out.trace_id.0, trace_digits).insert(headers, B3_TRACE_ID);
        Writer::new(&mut buf).hex(u128::from(out.span_id.0), 16).insert(headers, B3_SPAN_ID);
        if let Some(p) = out.parent_span_id {
            Writer::new(&mut buf).hex(u128::from(p.0), 16).insert(headers, B3_PARENT_SPAN_ID);
        }
        if out.debug {
            headers.insert(B3_FLAGS, HeaderValue::from_static("1"));
        } else {
            headers.insert(B3_SAMPLED, HeaderValue::from_static(if out.sampled { "1" } else { "0" }));
        }
    }
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;

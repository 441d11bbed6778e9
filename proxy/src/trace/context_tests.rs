use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{k}: {e}"));
        h.append(name, HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{v}: {e}")));
    }
    h
}

fn parent() -> Parent {
    Parent {
        trace_id: TraceId(u128::from_str_radix(TRACE, 16).unwrap_or_default()),
        span_id: SpanId(u64::from_str_radix(SPAN, 16).unwrap_or_default()),
    }
}

#[test]
fn a_valid_traceparent_is_continued_with_its_sampled_flag() {
    assert_eq!(parse_traceparent(&format!("00-{TRACE}-{SPAN}-01")), Some((parent(), true)));
    assert_eq!(parse_traceparent(&format!("00-{TRACE}-{SPAN}-00")), Some((parent(), false)));
    // Other flag bits do not matter to sampling.
    assert_eq!(parse_traceparent(&format!("00-{TRACE}-{SPAN}-03")), Some((parent(), true)));
}

#[test]
fn malformed_traceparents_are_invalid() {
    let cases = [
        format!("00-{TRACE}-{SPAN}-1"),                   // short flags
        format!("00-{}-{SPAN}-01", &TRACE[..31]),         // short trace ID
        format!("00-{TRACE}-{}-01", &SPAN[..15]),         // short span ID
        format!("00-{}-{SPAN}-01", TRACE.to_uppercase()), // uppercase hex
        format!("00-{TRACE}-{}-01", SPAN.to_uppercase()), // uppercase hex
        format!("00-{}-{SPAN}-01", "0".repeat(32)),       // all-zero trace ID
        format!("00-{TRACE}-{}-01", "0".repeat(16)),      // all-zero span ID
        format!("ff-{TRACE}-{SPAN}-01"),                  // version ff is never valid
        format!("0g-{TRACE}-{SPAN}-01"),                  // not hex
        format!("00-{TRACE}-{SPAN}-01-extra"),            // version 00 has exactly four fields
        format!("00-{TRACE}-{SPAN}-01 "),                 // trailing garbage
        format!("00_{TRACE}_{SPAN}_01"),                  // wrong separators
        format!("00-{TRACE}-{SPAN}-0x"),                  // flags not hex
        String::new(),
    ];
    for case in &cases {
        assert_eq!(parse_traceparent(case), None, "`{case}` must be invalid");
    }
}

#[test]
fn a_later_version_is_read_as_far_as_version_00_goes() {
    assert_eq!(parse_traceparent(&format!("01-{TRACE}-{SPAN}-01")), Some((parent(), true)));
    assert_eq!(parse_traceparent(&format!("cc-{TRACE}-{SPAN}-01-what-the-future-holds")), Some((parent(), true)));
    // ...but what follows must still be separated by a dash.
    assert_eq!(parse_traceparent(&format!("cc-{TRACE}-{SPAN}-01x")), None);
}

#[test]
fn an_invalid_traceparent_is_replaced_by_a_new_trace_in_the_same_form() {
    let mut h = headers(&[("traceparent", &format!("00-{}-{SPAN}-01", TRACE.to_uppercase())), ("tracestate", "a=1")]);
    let incoming = extract(&h);
    assert_eq!(incoming.parent, None);
    assert!(incoming.forms.w3c && !incoming.forms.b3);
    assert_eq!(incoming.tracestate, None, "tracestate without a valid traceparent is dropped");
    let out = outgoing(TraceId(7), SpanId(9), None, incoming.forms);
    inject(&mut h, &out, true);
    assert_eq!(
        h.get("traceparent").map(|v| v.as_bytes()),
        Some(&b"00-00000000000000000000000000000007-0000000000000009-01"[..])
    );
    assert!(h.get("traceparent").is_some_and(|v| v.is_sensitive()), "never indexed by an HTTP/2 peer's HPACK");
    assert!(h.get("tracestate").is_none());
}

#[test]
fn headers_without_trace_context_are_left_alone_but_for_the_new_one() {
    let mut h = headers(&[("x-b3", "not ours"), ("te", "trailers"), ("b3x", "1")]);
    let incoming = extract(&h);
    assert_eq!(incoming.forms, Propagation::default());
    let out = outgoing(TraceId(7), SpanId(9), None, Propagation { w3c: true, b3: false, b3multi: false });
    inject(&mut h, &out, true);
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-b3", "te", "b3x", "traceparent"]);
}

#[test]
fn two_traceparent_headers_are_invalid() {
    let tp = format!("00-{TRACE}-{SPAN}-01");
    assert_eq!(extract(&headers(&[("traceparent", &tp), ("traceparent", &tp)])).parent, None);
}

#[test]
fn tracestate_is_validated_combined_and_normalized() {
    let ok = |pairs: &[(&str, &str)]| parse_tracestate(headers(pairs).get_all("tracestate").iter());
    assert_eq!(
        ok(&[("tracestate", "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")]).as_ref().map(|v| v.as_bytes()),
        Some(&b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"[..])
    );
    assert_eq!(
        ok(&[("tracestate", "a=1"), ("tracestate", "b=2,,")]).as_ref().map(|v| v.as_bytes()),
        Some(&b"a=1,b=2"[..])
    );
    assert!(ok(&[("tracestate", "tenant@sys=x")]).is_some());
    for bad in ["a=1,a=2", "Upper=1", "novalue", "a=has,comma", "a=b=c", "1bad=x", "a=x\ty"] {
        assert_eq!(ok(&[("tracestate", bad)]), None, "`{bad}` must be invalid");
    }
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert_eq!(ok(&[("tracestate", &many.join(","))]), None, "more than 32 members");
}

#[test]
fn a_long_tracestate_loses_its_long_members_first_then_from_the_end() {
    let long = format!("big={}", "x".repeat(200));
    let mut members = vec![long.clone()];
    members.extend((0..30).map(|i| format!("k{i:02}={}", "v".repeat(10))));
    let text = members.join(",");
    let out = parse_tracestate(headers(&[("tracestate", &text)]).get_all("tracestate").iter());
    let out = out.map(|v| v.to_str().map(str::to_owned).unwrap_or_default()).unwrap_or_default();
    assert!(!out.contains("big="), "the long member goes first: {out}");
    assert!(out.starts_with("k00="));
    assert!(out.len() <= 512);
}

#[test]
fn b3_multi_headers_are_read_and_written_back_in_their_form() {
    let mut h = headers(&[("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", "1")]);
    let incoming = extract(&h);
    assert_eq!(incoming.parent, Some(parent()));
    assert_eq!(incoming.sampled, Some(true));
    assert!(incoming.forms.b3multi && !incoming.forms.w3c && !incoming.forms.b3);
    let out = outgoing(parent().trace_id, SpanId(0xabc), Some(parent().span_id), incoming.forms);
    inject(&mut h, &out, true);
    assert_eq!(h.get("x-b3-traceid").map(|v| v.as_bytes()), Some(TRACE.as_bytes()));
    assert_eq!(h.get("x-b3-spanid").map(|v| v.as_bytes()), Some(&b"0000000000000abc"[..]));
    assert_eq!(h.get("x-b3-parentspanid").map(|v| v.as_bytes()), Some(SPAN.as_bytes()));
    assert_eq!(h.get("x-b3-sampled").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert!(h.get("traceparent").is_none() && h.get("b3").is_none());
}

#[test]
fn b3_flags_mean_debug_and_64_bit_trace_ids_stay_64_bit() {
    let h = headers(&[("x-b3-traceid", &TRACE[16..]), ("x-b3-spanid", SPAN), ("x-b3-flags", "1")]);
    let incoming = extract(&h);
    assert!(incoming.debug && incoming.short_trace_id);
    assert_eq!(incoming.sampled, Some(true));
    let mut out = outgoing(incoming.parent.map_or(TraceId(1), |p| p.trace_id), SpanId(1), None, incoming.forms);
    out.short_trace_id = true;
    out.debug = true;
    let mut h = HeaderMap::new();
    inject(&mut h, &out, true);
    assert_eq!(h.get("x-b3-traceid").map(|v| v.as_bytes()), Some(&TRACE.as_bytes()[16..]));
    assert_eq!(h.get("x-b3-flags").map(|v| v.as_bytes()), Some(&b"1"[..]));
}

#[test]
fn malformed_b3_is_invalid() {
    for pairs in [
        vec![("x-b3-traceid", TRACE)],                                     // no span ID
        vec![("x-b3-traceid", &TRACE[..20]), ("x-b3-spanid", SPAN)],       // odd length
        vec![("x-b3-traceid", "0000000000000000"), ("x-b3-spanid", SPAN)], // zero trace ID
        vec![("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", "yes")],
        vec![("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-parentspanid", "xyz")],
        vec![("b3", "garbage")],
        vec![("b3", &format!("{TRACE}-{SPAN}-2"))],
        vec![("b3", &format!("{TRACE}-{SPAN}-1-{SPAN}-extra"))],
        vec![("b3", &format!("{}-{SPAN}-1", TRACE.to_uppercase()))],
    ] {
        assert_eq!(extract(&headers(&pairs)).parent, None, "{pairs:?} must be invalid");
    }
}

#[test]
fn b3_single_header_is_read_and_written_back_in_its_form() {
    let mut h = headers(&[("b3", &format!("{TRACE}-{SPAN}-1-{SPAN}"))]);
    let incoming = extract(&h);
    assert_eq!((incoming.parent, incoming.sampled), (Some(parent()), Some(true)));
    assert!(incoming.forms.b3 && !incoming.forms.b3multi);
    let out = outgoing(parent().trace_id, SpanId(2), Some(parent().span_id), incoming.forms);
    inject(&mut h, &out, true);
    assert_eq!(h.get("b3").map(|v| v.as_bytes()), Some(format!("{TRACE}-0000000000000002-1-{SPAN}").as_bytes()));
    // A bare decision carries no IDs.
    let deny = extract(&headers(&[("b3", "0")]));
    assert_eq!((deny.parent, deny.sampled), (None, Some(false)));
    // No decision: left to the proxy.
    assert_eq!(extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}"))])).sampled, None);
}

#[test]
fn traceparent_wins_over_b3_and_both_forms_are_written() {
    let other = "11111111111111111111111111111111";
    let h = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01")), ("b3", &format!("{other}-{SPAN}-0"))]);
    let incoming = extract(&h);
    assert_eq!(incoming.parent, Some(parent()));
    assert_eq!(incoming.sampled, Some(true));
    assert!(incoming.forms.w3c && incoming.forms.b3);
}

fn outgoing(trace_id: TraceId, span_id: SpanId, parent_span_id: Option<SpanId>, forms: Propagation) -> Outgoing {
    Outgoing {
        trace_id,
        span_id,
        parent_span_id,
        sampled: true,
        debug: false,
        forms,
        tracestate: None,
        short_trace_id: false,
    }
}

#[test]
fn the_form_bits_name_their_headers() {
    let bit = |name: &HeaderName| ALL.iter().position(|n| n == name).map_or(0, |i| 1u8 << i);
    assert_eq!(bit(&TRACEPARENT), TRACEPARENT_BIT);
    assert_eq!(bit(&B3), B3_BIT);
    assert_eq!(bit(&B3_TRACE_ID) | bit(&B3_SPAN_ID) | bit(&B3_SAMPLED) | bit(&B3_FLAGS), B3_MULTI_BITS);
}

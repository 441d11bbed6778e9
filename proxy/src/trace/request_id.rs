//! `x-request-id`: passed through when it is a sane token, generated (a random UUID) when absent or not.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Makes sure `headers` carry one acceptable `x-request-id`, and returns it.
pub fn ensure(headers: &mut HeaderMap, max_len: usize) -> HeaderValue {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    let given = match (values.next(), values.next()) {
        (Some(v), None) if acceptable(v.as_bytes(), max_len) => Some(v.clone()),
        _ => None,
    };
    let mut id = given.unwrap_or_else(generate);
    // One per request: not worth an HTTP/2 peer's HPACK table slot (see `writer::Writer::insert`).
    id.set_sensitive(true);
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// Visible ASCII only (no spaces, no controls), 1 to `max_len` bytes.
pub fn acceptable(value: &[u8], max_len: usize) -> bool {
    (1..=max_len).contains(&value.len()) && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A version-4 UUID.
pub fn generate() -> HeaderValue {
    let bits: u128 = rand::random();
    let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut buf = [0u8; 36];
    let mut w = super::writer::Writer::new(&mut buf);
    w.hex(bits >> 96, 8).put(b"-").hex(bits >> 80, 4).put(b"-").hex(bits >> 64, 4).put(b"-");
    w.hex(bits >> 48, 4).put(b"-").hex(bits, 12);
    w.value().unwrap_or_else(|| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_id_passes_and_others_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure(&mut h, 128), "abc-123");
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap_or_else(|e| panic!("{e}")));
            let id = ensure(&mut h, 128);
            assert_ne!(id, bad);
            assert_eq!(h.get(X_REQUEST_ID), Some(&id));
        }
        let mut h = HeaderMap::new();
        h.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        ensure(&mut h, 128);
        assert_eq!(h.get_all(X_REQUEST_ID).iter().count(), 1, "two ids become one new one");
    }

    #[test]
    fn generated_ids_are_version_4_uuids() {
        let id = generate();
        let text = id.to_str().unwrap_or_default();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        assert_ne!(generate(), id);
    }
}

//! Header values formatted on the stack: the trace headers and request IDs written on every request.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Formats a header value on the stack: trace headers are written on every request.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    pub fn put(&mut self, bytes: &[u8]) -> &mut Self {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
        self
    }

    /// The low `digits` hex digits of `value` (at most 32), lowercase, zero-padded.
    pub fn hex(&mut self, value: u128, digits: usize) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digits = digits.min(32).min(self.buf.len() - self.len);
        let out = &mut self.buf[self.len..self.len + digits];
        let bytes = value.to_be_bytes();
        match bytes.get(bytes.len().saturating_sub(digits / 2)..).filter(|_| digits & 1 == 0) {
            // Two digits per byte (trace and span IDs: 32 and 16 digits), without shifting a u128 per digit.
            Some(low) => {
                for (pair, b) in out.chunks_exact_mut(2).zip(low) {
                    pair[0] = HEX[usize::from(b >> 4)];
                    pair[1] = HEX[usize::from(b & 0xf)];
                }
            }
            None => {
                for (slot, i) in out.iter_mut().zip((0..digits).rev()) {
                    *slot = HEX[((value >> (i * 4)) & 0xf) as usize];
                }
            }
        }
        self.len += digits;
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Inserts the value as sensitive: a fresh random ID per request is never worth a slot in an HTTP/2 peer's
    /// HPACK table, and indexing it would evict the entries that do repeat (it goes as a never-indexed literal).
    pub fn insert(&self, headers: &mut HeaderMap, name: HeaderName) {
        if let Some(mut v) = self.value() {
            v.set_sensitive(true);
            headers.insert(name, v);
        }
    }

    /// The bytes written so far as a header value, in one allocation that its clones share. (A value copied in
    /// with `HeaderValue::from_bytes` allocates again at its first clone, and the request ID is cloned into the
    /// hop, a retried request's headers into every attempt.) `None` when they are not a valid value.
    pub fn value(&self) -> Option<HeaderValue> {
        let bytes = self.bytes();
        if bytes.len() > INLINE {
            return HeaderValue::from_bytes(bytes).ok();
        }
        let mut inline = Inline { buf: [0; INLINE], len: bytes.len() };
        inline.buf[..bytes.len()].copy_from_slice(bytes);
        HeaderValue::from_maybe_shared(Bytes::from_owner(inline)).ok()
    }
}

/// The longest value written (a single `b3` header is 68 bytes).
const INLINE: usize = 72;

/// A formatted value's bytes, owned by the `Bytes` that shares them.
struct Inline {
    buf: [u8; INLINE],
    len: usize,
}

impl AsRef<[u8]> for Inline {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_keeps_its_bytes_whatever_its_length() {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        w.put(b"00-").hex(0xabc, 32).put(b"-01");
        let value = w.value().unwrap_or_else(|| panic!("valid"));
        assert_eq!(value.as_bytes(), b"00-00000000000000000000000000000abc-01");
        assert_eq!(value.clone(), value);
        let long = [b'a'; 100];
        let mut buf = [0u8; 128];
        assert_eq!(Writer::new(&mut buf).put(&long).value().map(|v| v.as_bytes().to_vec()), Some(long.to_vec()));
        let mut buf = [0u8; 8];
        assert!(Writer::new(&mut buf).put(b"a\nb").value().is_none(), "not a valid header value");
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.hex(u128::MAX - 1, 32).put(b"-").hex(0x0f1e, 3).put(b"-").hex(0x1234_5678_9abc_def0, 16).hex(7, 40);
        // The last one is cut to the 11 digits left in the buffer.
        assert_eq!(w.bytes(), b"fffffffffffffffffffffffffffffffe-f1e-123456789abcdef000000000007");
    }
}

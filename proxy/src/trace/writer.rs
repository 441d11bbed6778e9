//! Header values formatted on the stack: the trace headers and request IDs written on every request.

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

    /// The low `digits` hex digits of `value`, lowercase, zero-padded.
    pub fn hex(&mut self, value: u128, digits: usize) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Digit by digit into the buffer (through `put`, each one was a `memcpy` call of one byte).
        let digits = digits.min(self.buf.len() - self.len);
        for (slot, i) in self.buf[self.len..self.len + digits].iter_mut().zip((0..digits).rev()) {
            *slot = HEX[((value >> (i * 4)) & 0xf) as usize];
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
        if let Ok(mut v) = HeaderValue::from_bytes(self.bytes()) {
            v.set_sensitive(true);
            headers.insert(name, v);
        }
    }
}

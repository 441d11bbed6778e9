//! The HTTP/2 rapid-reset guard (`limits.h2_max_pending_reset_streams`): a burst of streams a peer opens and
//! cancels before the proxy took them up is tolerated up to the limit, and the connection goes on serving; past it,
//! the connection is closed with GOAWAY `ENHANCE_YOUR_CALM`. The frames are written by hand, all in one write, so
//! the proxy reads the whole burst in one pass whatever the scheduling.

use anyhow::{bail, Result};
use attache_tests::{client, proxy, server, yaml};

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// `GET http://web/` in HPACK without the dynamic table: `:method GET`, `:scheme http`, `:path /` from the static
/// table, `:authority` as a literal with an indexed name.
fn get_web(out: &mut Vec<u8>, stream: u32) {
    frame(out, HEADERS, END_STREAM_AND_HEADERS, stream, &[0x82, 0x86, 0x84, 0x01, 3, b'w', b'e', b'b']);
}

/// What the proxy answers to a burst of `resets` opened-and-cancelled streams followed by one more request.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Response headers for the last stream; the first byte of their HPACK block (`0x88` is `:status 200`).
    Answered(u8),
    GoAway(u32),
}

async fn burst(addr: std::net::SocketAddr, resets: u32) -> Result<Outcome> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    for i in 0..resets {
        let stream = 1 + 2 * i;
        get_web(&mut out, stream);
        frame(&mut out, RST_STREAM, 0, stream, &CANCEL.to_be_bytes());
    }
    let last = 1 + 2 * resets;
    get_web(&mut out, last);
    let mut conn = client::raw_tcp(addr).await?;
    conn.write_all(&out).await?;
    loop {
        let head = conn.read_exact(9).await?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, stream) = (head[3], u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff);
        let payload = conn.read_exact(len).await?;
        match kind {
            GOAWAY if payload.len() >= 8 => {
                return Ok(Outcome::GoAway(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]])))
            }
            HEADERS if stream == last && !payload.is_empty() => return Ok(Outcome::Answered(payload[0])),
            HEADERS if stream == last => bail!("empty response headers"),
            _ => {}
        }
    }
}

async fn proxy_with(limits: &str) -> (server::Server, proxy::TestProxy) {
    let backend = server::auto().route("/", server::ok("fine")).run().await;
    let config = yaml::one_backend("web", &[backend.addr()]).limits(limits).build();
    let proxy = proxy::new().config(config).run().await;
    (backend, proxy)
}

#[tokio::test]
async fn a_burst_of_cancelled_streams_within_the_default_limit_keeps_the_connection() {
    let (_backend, proxy) = proxy_with("").await;
    // More than h2's own limit of 20, within the default of 100.
    let outcome = burst(proxy.outbound(), 50).await.unwrap();
    assert_eq!(outcome, Outcome::Answered(0x88), "the request after the burst should be answered 200");
}

#[tokio::test]
async fn a_burst_past_the_configured_limit_gets_goaway_enhance_your_calm() {
    let (_backend, proxy) = proxy_with("h2_max_pending_reset_streams: 10").await;
    let outcome = burst(proxy.outbound(), 50).await.unwrap();
    assert_eq!(outcome, Outcome::GoAway(ENHANCE_YOUR_CALM));
}

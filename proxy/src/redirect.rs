//! Transparent interception: where a connection redirected by the sidecar's iptables rules (`attache-proxy init`)
//! was originally going, read with `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6).

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The original destination of a NAT-redirected connection; `None` when it was not redirected (it came to the
/// listener's own address) or the kernel keeps no NAT state for it.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = socket2::SockRef::from(stream);
    let original = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    let original = original.ok()?.as_socket()?;
    // A connection made straight to the listener reports its own address.
    (original != local).then_some(original)
}

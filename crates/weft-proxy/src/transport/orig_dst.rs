//! Where a redirected connection was going: `SO_ORIGINAL_DST` after an iptables REDIRECT.
//! Behind a trait so tests can run without the kernel's NAT table.

use std::net::SocketAddr;
use tokio::net::TcpStream;

pub trait OriginalDst: Send + Sync + 'static {
    /// The original destination, or `None` when the connection was not redirected.
    fn lookup(&self, stream: &TcpStream) -> Option<SocketAddr>;
}

/// The kernel's answer, via `getsockopt(SO_ORIGINAL_DST)` (IPv4) and
/// `IP6T_SO_ORIGINAL_DST` (IPv6).
pub struct SoOriginalDst;

impl OriginalDst for SoOriginalDst {
    fn lookup(&self, stream: &TcpStream) -> Option<SocketAddr> {
        use nix::sys::socket::{getsockopt, sockopt};
        let local = stream.local_addr().ok()?;
        let dst = if local.is_ipv4() {
            let a = getsockopt(stream, sockopt::OriginalDst).ok()?;
            SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        } else {
            let a = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
            SocketAddr::from((
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
            ))
        };
        // Without a REDIRECT the kernel reports the socket's own address.
        (dst != local).then_some(dst)
    }
}

/// Every connection appears addressed to one destination: tests of transparent routing
/// that do not need a network namespace.
pub struct FixedOriginalDst(pub SocketAddr);

impl OriginalDst for FixedOriginalDst {
    fn lookup(&self, _: &TcpStream) -> Option<SocketAddr> {
        Some(self.0)
    }
}

/// No redirection: explicit-proxy mode only.
pub struct NoOriginalDst;

impl OriginalDst for NoOriginalDst {
    fn lookup(&self, _: &TcpStream) -> Option<SocketAddr> {
        None
    }
}

//! What is known about a downstream connection, below the protocols that run on it: which
//! listener took it, its addresses and where it was going.

use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
    /// A Gateway server's port (gateway mode).
    Gateway,
}

/// What is known about the downstream connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub direction: Direction,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// From `SO_ORIGINAL_DST`, when the connection was redirected to the proxy.
    pub original_dst: Option<SocketAddr>,
}

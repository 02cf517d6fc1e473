//! What is known about a downstream connection, below the protocols that run on it: which
//! listener took it, its addresses, where it was going and who the peer proved to be.

use super::tls::MtlsPeer;
use std::net::SocketAddr;
use std::sync::Arc;

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
    /// The caller's sidecar, when the connection is Istio's mTLS.
    pub mtls: Option<MtlsPeer>,
    /// The Gateway server (its route table's name) that terminated the connection's TLS.
    pub terminated_by: Option<Arc<str>>,
    /// The SNI of the connection's TLS ClientHello (Envoy's `REQUESTED_SERVER_NAME`).
    pub requested_server_name: Option<Arc<str>>,
    /// Whether an AUDIT AuthorizationPolicy matched the connection, once checked as TCP
    /// (Envoy's network RBAC `access_log_hint`).
    pub access_log_hint: Option<bool>,
}

//! Connections: original destinations, protocol sniffing, TLS server names, upstream connects,
//! Istio's mTLS, splicing.

pub mod conn;
pub mod connect;
pub mod detect;
pub mod orig_dst;
pub mod sni;
pub mod splice;
pub mod tls;

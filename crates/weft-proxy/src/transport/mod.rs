//! Connections: original destinations, protocol sniffing, TLS server names, upstream connects.

pub mod connect;
pub mod detect;
pub mod orig_dst;
pub mod sni;

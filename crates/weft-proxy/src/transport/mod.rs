//! Connections: original destinations, protocol sniffing, TLS server names.

pub mod detect;
pub mod orig_dst;
pub mod sni;

//! The HTTP side of the proxy: routing a request by the compiled tables and sending it on.

pub mod body;
pub mod edge;
pub mod forward;
pub mod headers;
pub mod local_reply;
pub mod oneshot;
mod outbound;
pub mod path;
pub mod server;
mod tunnel;

pub use outbound::handle;

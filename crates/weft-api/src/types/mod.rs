//! Resource types, field for field as Istio's reference names them.

pub mod destination_rule;
pub mod duration;
pub mod gateway;
pub mod meta;
pub mod service;
pub mod service_entry;
pub mod timestamp;
pub mod virtual_service;

pub use destination_rule::*;
pub use duration::Duration;
pub use gateway::*;
pub use meta::*;
pub use service::*;
pub use service_entry::*;
pub use virtual_service::*;

//! Resource types, field for field as Istio's reference names them.

pub mod destination_rule;
pub mod duration;
pub mod gateway;
pub mod mesh_config;
pub mod meta;
pub mod secret;
pub mod security;
pub mod service;
pub mod service_entry;
pub mod telemetry;
pub mod timestamp;
pub mod virtual_service;

pub use destination_rule::*;
pub use duration::Duration;
pub use gateway::*;
pub use mesh_config::MeshConfig;
pub use meta::*;
pub use secret::Secret;
pub use security::*;
pub use service::*;
pub use service_entry::*;
pub use telemetry::Telemetry;
pub use virtual_service::*;

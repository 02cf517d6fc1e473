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

/// schemars leaves serde's aliases out: `field`'s schema again under `alias`, a name Istio's
/// schema lists too (the proto's own).
fn with_alias(schema: &mut schemars::Schema, field: &str, alias: &str) {
    let properties = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut);
    if let Some(properties) = properties {
        if let Some(field) = properties.get(field).cloned() {
            properties.insert(alias.into(), field);
        }
    }
}

//! Weft's view of Istio's configuration API: the `networking.istio.io` resources and
//! Kubernetes `v1 Service`, read from YAML or JSON as kubectl reads them and validated with
//! Istio's rules.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod destination_rules;
pub mod expression;
pub mod host;
pub mod load;
pub mod log_format;
pub mod peer_authentication;
pub mod resource;
pub mod scope;
pub mod types;
pub mod validate;

pub use load::{
    load_mesh_config, load_path, load_str, parse_document, split_documents, Diagnostic, LoadError,
    Loaded,
};
pub use resource::{Kind, Origin, Redacted, Resource, Spec};
pub use validate::Severity;

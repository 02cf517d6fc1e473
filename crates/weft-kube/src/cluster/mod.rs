//! The cluster as the control plane's config source, as istiod watches it: Namespaces,
//! Services, EndpointSlices and Pods, and Istio's kinds once their CRDs exist.

pub mod index;
pub mod leader;
pub mod source;
pub mod token_review;

pub use source::{client, KubeError, KubeSource};

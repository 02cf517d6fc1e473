//! Workload identity for Weft, as Istio's security model has it: SPIFFE identities, the
//! control plane's CA, the pod credentials that prove which identity a pod may hold, and
//! the certificates and keys a proxy holds.
#![forbid(unsafe_code)]

pub mod ca;
pub mod cert;
pub mod credential;
pub mod origination;
pub mod secret_file;
pub mod spiffe;
pub mod termination;
pub mod tls;
pub mod workload;

pub use spiffe::{Identity, IdentityError, DEFAULT_TRUST_DOMAIN};

//! A proxy's side of its identity: a key made in memory that never leaves the process, and
//! the CSR the control plane signs.

use crate::Identity;
use rcgen::{CertificateParams, KeyPair, SanType};

/// Why a key or CSR could not be made.
pub use rcgen::Error as KeyError;

pub struct WorkloadKey {
    key: KeyPair,
}

impl std::fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkloadKey(…)")
    }
}

impl WorkloadKey {
    /// An ECDSA P-256 key, as Istio's agent makes by default.
    pub fn generate() -> Result<WorkloadKey, rcgen::Error> {
        Ok(WorkloadKey {
            key: KeyPair::generate()?,
        })
    }

    /// A key given as PEM (PKCS#8), as file-mounted certificates come.
    pub fn from_pem(pem: &str) -> Result<WorkloadKey, rcgen::Error> {
        Ok(WorkloadKey {
            key: KeyPair::from_pem(pem)?,
        })
    }

    /// A CSR asking for `identity`, signed by this key.
    pub fn csr(&self, identity: &Identity) -> Result<String, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        params.serialize_request(&self.key)?.pem()
    }

    /// The key as PEM, for TLS stacks that take it so; it stays in this process.
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The key as rustls takes it; the DER stays in this process.
    pub fn private_key(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        rustls_pki_types::PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }
}

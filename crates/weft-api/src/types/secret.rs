//! Kubernetes `v1 Secret`: the TLS credentials a Gateway server's `credentialName` names,
//! in the shapes Istio reads (`kubernetes.io/tls`, or generic with Istio's key names).

use std::collections::BTreeMap;
use std::fmt;

/// The secret types Kubernetes checks the keys of.
pub const TLS_TYPE: &str = "kubernetes.io/tls";

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret {
    /// `type`: `Opaque` when unset, as Kubernetes defaults it.
    pub type_: String,
    /// `data` decoded, with `stringData` merged over it as the API server does.
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Never the bytes: a Secret's Debug output may reach a log.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: BTreeMap<&str, String> = self
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), format!("<{} bytes>", v.len())))
            .collect();
        f.debug_struct("Secret")
            .field("type", &self.type_)
            .field("data", &sizes)
            .finish()
    }
}

/// A server credential as Istio reads it from a Secret: the chain, its key and, for
/// MUTUAL, the CA that client certificates must chain to.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCredential<'a> {
    pub certificate: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub ca: Option<&'a [u8]>,
}

impl Secret {
    /// Istio's key names: `tls.crt`/`tls.key`/`ca.crt`, else the generic
    /// `cert`/`key`/`cacert`.
    pub fn tls_credential(&self) -> TlsCredential<'_> {
        let get = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| self.data.get(*n))
                .map(Vec::as_slice)
        };
        TlsCredential {
            certificate: get(["tls.crt", "cert"]),
            key: get(["tls.key", "key"]),
            ca: get(["ca.crt", "cacert"]),
        }
    }
}

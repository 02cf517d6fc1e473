//! The Secrets a `credentialName` names, read from the proxy's own namespace as Istio's SDS
//! reads them: a Gateway server's certificate, a DestinationRule's client certificate, and
//! the CAs beside them (`ca.crt` in the Secret, else a Secret `NAME-cacert`).

use weft_api::types::Secret;
use weft_api::{Resource, Spec};

/// The Secrets of one namespace.
#[derive(Clone, Copy)]
pub(super) struct Secrets<'a> {
    pub resources: &'a [Resource],
    pub namespace: &'a str,
}

/// What a Secret holds, as PEM text, and which Secret it was.
pub(super) struct Found {
    pub chain: Option<String>,
    pub key: Option<String>,
    pub ca: Option<String>,
    /// `Secret ns/name`.
    pub from: String,
}

impl<'a> Secrets<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Secret> {
        self.resources.iter().find_map(|r| match &r.spec {
            Spec::Secret(s) if r.name() == name && r.namespace() == self.namespace => Some(s),
            _ => None,
        })
    }

    pub fn from(&self, name: &str) -> String {
        format!("Secret {}/{name}", self.namespace)
    }

    /// The Secret `name`, with its own CA or else `ca_name`'s; `ca_name` alone when
    /// `explicit_ca` (`caCertCredentialName` wins over the credential's own `ca.crt`).
    pub fn credential(
        &self,
        name: &str,
        ca_name: &str,
        explicit_ca: bool,
        hint: &str,
    ) -> Result<Found, String> {
        let from = self.from(name);
        let Some(found) = self.get(name) else {
            return Err(format!("credentialName {name:?}: no {from} ({hint})"));
        };
        let parts = found.tls_credential();
        let ca_from = self.from(ca_name);
        let separate_ca = || self.get(ca_name).and_then(|s| s.tls_credential().ca);
        let ca = match (explicit_ca, parts.ca) {
            (true, _) => match separate_ca() {
                Some(ca) => Some(pem(ca, "cacert", &ca_from)?),
                None => {
                    return Err(format!("caCertCredentialName {ca_name:?}: no {ca_from} holding ca.crt or cacert (weft create secret generic {ca_name} -n {} --from-file=ca.crt=FILE)", self.namespace))
                }
            },
            (false, Some(ca)) => Some(pem(ca, "ca.crt", &from)?),
            (false, None) => separate_ca()
                .map(|ca| pem(ca, "cacert", &ca_from))
                .transpose()?,
        };
        Ok(Found {
            chain: parts
                .certificate
                .map(|c| pem(c, "tls.crt", &from))
                .transpose()?,
            key: parts.key.map(|k| pem(k, "tls.key", &from)).transpose()?,
            ca,
            from,
        })
    }
}

fn pem(bytes: &[u8], what: &str, from: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} in {from} is not PEM text"))
}

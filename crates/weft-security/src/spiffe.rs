//! Workload identities as SPIFFE IDs: `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`,
//! the form Istio puts in certificates and in `source.principal`.

use std::fmt;

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{0:?} is not a SPIFFE ID of a workload (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)")]
    Shape(String),
    #[error(
        "{what} {value:?} is not a DNS label (lower-case letters, digits and '-', at most 63)"
    )]
    Label { what: &'static str, value: String },
    #[error("trust domain {0:?} is not a DNS name")]
    TrustDomain(String),
}

use weft_api::validate::{is_dns1123_label as is_label, is_dns1123_subdomain as is_dns_name};

impl Identity {
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Identity, IdentityError> {
        if !is_dns_name(trust_domain) {
            return Err(IdentityError::TrustDomain(trust_domain.into()));
        }
        for (what, value) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if !is_label(value) {
                return Err(IdentityError::Label {
                    what,
                    value: value.into(),
                });
            }
        }
        Ok(Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        })
    }

    pub fn parse(uri: &str) -> Result<Identity, IdentityError> {
        let shape = || IdentityError::Shape(uri.into());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(shape)?;
        let mut parts = rest.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
                Identity::new(td, ns, sa)
            }
            _ => Err(shape()),
        }
    }

    /// Istio's principal form, without the scheme: `cluster.local/ns/default/sa/bookinfo`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.principal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_parse_and_print_as_istio_writes_them() {
        let id =
            Identity::parse("spiffe://cluster.local/ns/default/sa/bookinfo-productpage").unwrap();
        assert_eq!(id.namespace, "default");
        assert_eq!(id.service_account, "bookinfo-productpage");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(
            id.principal(),
            "cluster.local/ns/default/sa/bookinfo-productpage"
        );
        for bad in [
            "cluster.local/ns/default/sa/x",
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns/default/sa/x/extra",
            "spiffe://cluster.local/ns/../sa/x",
            "spiffe://cluster.local/ns/Default/sa/x",
            "spiffe:///ns/default/sa/x",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Reading certificates: what `weft proxy-config secret` shows (SANs, validity, serial,
//! issuer) and the SPIFFE identity a peer's certificate names.

use crate::Identity;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("not a PEM certificate chain: {0}")]
    Pem(String),
    #[error("not an X.509 certificate: {0}")]
    Der(String),
}

/// What a certificate says, as istioctl's `proxy-config secret` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    pub serial_number: String,
    pub subject: String,
    pub issuer: String,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
}

impl CertInfo {
    pub fn of_der(der: &[u8]) -> Result<CertInfo, CertError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
        let mut uri_sans = Vec::new();
        let mut dns_sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uri_sans.push(u.to_string()),
                    GeneralName::DNSName(d) => dns_sans.push(d.to_string()),
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        Ok(CertInfo {
            serial_number: cert.raw_serial_as_string().replace(':', ""),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            uri_sans,
            dns_sans,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            is_ca: cert.is_ca(),
        })
    }

    /// The workload identity among the URI SANs, if there is exactly one.
    pub fn identity(&self) -> Option<Identity> {
        let mut ids = self.uri_sans.iter().filter_map(|u| Identity::parse(u).ok());
        match (ids.next(), ids.next()) {
            (Some(id), None) => Some(id),
            _ => None,
        }
    }

    /// When a holder that received the certificate at `received` should renew it: halfway
    /// through the life it had left then, as Istio's agent renews at half a certificate's life
    /// (`SECRET_GRACE_PERIOD_RATIO` 0.5). Counting from receipt rather than `not_before`
    /// keeps the CA's backdating for clock skew from making a short certificate renew at once;
    /// never sooner than a second, so a certificate that arrives expired is not asked for in
    /// a tight loop.
    pub fn renew_at(&self, received: SystemTime) -> SystemTime {
        let expires = UNIX_EPOCH + Duration::from_secs(self.not_after.max(0) as u64);
        let left = expires.duration_since(received).unwrap_or(Duration::ZERO);
        received + (left / 2).max(Duration::from_secs(1))
    }
}

/// The certificates of a PEM chain, in order.
pub fn chain_der(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::Pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{Ca, WORKLOAD_TTL};
    use crate::workload::WorkloadKey;

    #[test]
    fn a_workload_certificate_names_its_identity_on_the_proxys_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("root-key.pem"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let key = WorkloadKey::generate().unwrap();
        let wanted =
            Identity::parse("spiffe://cluster.local/ns/default/sa/bookinfo-reviews").unwrap();
        // A CSR asking for another identity than the one proved is refused.
        let asked = Identity::parse("spiffe://cluster.local/ns/default/sa/admin").unwrap();
        let foreign = ca.sign(&key.csr(&asked).unwrap(), &wanted, WORKLOAD_TTL);
        assert!(
            matches!(foreign, Err(crate::ca::CaError::ForeignIdentity { .. })),
            "{foreign:?}"
        );
        let chain = ca
            .sign(&key.csr(&wanted).unwrap(), &wanted, WORKLOAD_TTL)
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf and root");
        assert_eq!(chain[1], ca.root_pem());
        let leaf = CertInfo::of_der(&chain_der(&chain[0]).unwrap()[0]).unwrap();
        assert_eq!(leaf.identity(), Some(wanted));
        assert_eq!(leaf.uri_sans.len(), 1);
        assert!(!leaf.is_ca);
        assert_eq!(leaf.not_after - leaf.not_before, 24 * 3600 + 60);
        let root = CertInfo::of_der(&chain_der(ca.root_pem()).unwrap()[0]).unwrap();
        assert!(root.is_ca);
        assert_eq!(leaf.issuer, root.subject);

        // Restarted, the CA is the same root.
        let again = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
        assert_eq!(again.root_pem(), ca.root_pem());
        // A CSR whose signature does not match its key is refused.
        let tampered = key.csr(&asked).unwrap().replace("MII", "MIJ");
        assert!(ca.sign(&tampered, &asked, WORKLOAD_TTL).is_err());
        assert!(ca.sign("not a csr", &asked, WORKLOAD_TTL).is_err());
    }

    #[test]
    fn a_plugged_in_intermediate_signs_with_the_chain_up_to_its_root() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root_cert = root.self_signed(&root_key).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "intermediate");
        let ca_cert = ca
            .signed_by(&ca_key, &Issuer::new(root, &root_key))
            .unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca-cert.pem", ca_cert.pem());
        write("ca-key.pem", ca_key.serialize_pem());
        write("root-cert.pem", root_cert.pem());
        write("cert-chain.pem", ca_cert.pem() + &root_cert.pem());
        let plugged = Ca::plugged(
            &crate::ca::PluggedFiles {
                dir: dir.path().to_path_buf(),
            },
            "cluster.local",
        )
        .unwrap();
        assert_eq!(plugged.root_pem(), root_cert.pem());
        let id = Identity::parse("spiffe://cluster.local/ns/default/sa/sleep").unwrap();
        let csr = WorkloadKey::generate().unwrap().csr(&id).unwrap();
        let chain = plugged.sign(&csr, &id, WORKLOAD_TTL).unwrap();
        assert_eq!(chain.len(), 3, "leaf, intermediate, root");
        let leaf = CertInfo::of_der(&chain_der(&chain[0]).unwrap()[0]).unwrap();
        assert!(leaf.issuer.contains("intermediate"), "{}", leaf.issuer);
        assert_eq!(chain[1], ca_cert.pem());
    }

    #[test]
    fn renewal_falls_halfway_through_the_life_left_on_receipt() {
        let received = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cert = |not_before: i64, not_after: i64| CertInfo {
            serial_number: String::new(),
            subject: String::new(),
            issuer: String::new(),
            uri_sans: Vec::new(),
            dns_sans: Vec::new(),
            not_before,
            not_after,
            is_ca: false,
        };
        // 24 h, backdated 60 s: renewed 12 h after receipt.
        let day = cert(1_000_000 - 60, 1_000_000 + 86_400);
        assert_eq!(
            day.renew_at(received),
            received + Duration::from_secs(43_200)
        );
        // 2 s, backdated 60 s: 1 s after receipt, not at once.
        let short = cert(1_000_000 - 60, 1_000_002);
        assert_eq!(short.renew_at(received), received + Duration::from_secs(1));
        // Already expired: a second later, not in a tight loop.
        let expired = cert(0, 999_000);
        assert_eq!(
            expired.renew_at(received),
            received + Duration::from_secs(1)
        );
    }
}

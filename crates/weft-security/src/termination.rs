//! TLS a gateway terminates, as a Gateway server's `tls` asks: `SIMPLE` shows the server's
//! certificate; `MUTUAL` also requires a client certificate chained to the CA given, and
//! `OPTIONAL_MUTUAL` checks one if the client sends it; `subjectAltNames` limits which
//! client certificates are taken; `minProtocolVersion`/`maxProtocolVersion` bound the
//! versions (rustls speaks TLS 1.2 and 1.3 only).

use crate::cert::{chain_der, CertError, CertInfo};
use crate::origination::roots_from_pem;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TerminationError {
    #[error("the server certificate: {0}")]
    Certificate(CertError),
    #[error("the private key: {0}")]
    Key(String),
    #[error("the CA certificates: {0}")]
    Ca(String),
    #[error("{0}")]
    Version(String),
    #[error("cannot build the TLS config: {0}")]
    Config(rustls::Error),
}

/// Whether and how client certificates are checked.
pub enum Clients {
    /// `SIMPLE`: none asked for.
    Anonymous,
    /// `MUTUAL` (`required`) or `OPTIONAL_MUTUAL`: chained to `ca_pem`, and naming one of
    /// `subject_alt_names` if any are given.
    Verified {
        ca_pem: String,
        subject_alt_names: Vec<String>,
        required: bool,
    },
}

/// One server's termination settings.
pub struct Termination<'a> {
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
    pub clients: Clients,
    /// Istio's `TLSV1_0`…`TLSV1_3`, `TLS_AUTO` or unset.
    pub min_version: Option<&'a str>,
    pub max_version: Option<&'a str>,
    pub alpn: &'a [&'a [u8]],
}

/// The server config for one Gateway server.
pub fn server_config(t: &Termination<'_>) -> Result<ServerConfig, TerminationError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = chain_der(t.chain_pem).map_err(TerminationError::Certificate)?;
    let key = PrivateKeyDer::from_pem_slice(t.key_pem.as_bytes())
        .map_err(|e| TerminationError::Key(e.to_string()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(t.min_version, t.max_version)?)
        .map_err(TerminationError::Config)?;
    let builder = match &t.clients {
        Clients::Anonymous => builder.with_no_client_auth(),
        Clients::Verified {
            ca_pem,
            subject_alt_names,
            required,
        } => {
            let roots = roots_from_pem(ca_pem).map_err(|e| TerminationError::Ca(e.to_string()))?;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if !required {
                verifier = verifier.allow_unauthenticated();
            }
            let inner = verifier
                .build()
                .map_err(|e| TerminationError::Ca(e.to_string()))?;
            let verifier: Arc<dyn ClientCertVerifier> = if subject_alt_names.is_empty() {
                inner
            } else {
                Arc::new(NamedClients {
                    inner,
                    names: subject_alt_names.clone(),
                })
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TerminationError::Key(e.to_string()))?;
    if key
        .public_key()
        .is_some_and(|k| Some(k.as_ref()) != spki(&chain[0]))
    {
        return Err(TerminationError::Key(
            "it does not belong to the certificate (their public keys differ)".into(),
        ));
    }
    // Presented as given: rustls' own check parses the leaf with webpki, which refuses the
    // X.509 v1 certificates OpenSSL before 3.2 makes with `x509 -req`, as Istio's task does.
    let mut config =
        builder.with_cert_resolver(Arc::new(Presents(Arc::new(CertifiedKey::new(chain, key)))));
    config.alpn_protocols = t.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The certificate's SubjectPublicKeyInfo, as DER.
fn spki<'a>(cert: &'a CertificateDer<'_>) -> Option<&'a [u8]> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.tbs_certificate.subject_pki.raw)
}

/// One server certificate for every handshake.
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesServerCert for Presents {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The versions between Istio's bounds that rustls has: TLS 1.2 and 1.3, as Envoy's
/// gateway defaults to (TLS_AUTO). A bound below 1.2 is raised to it.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], TerminationError> {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS12, &rustls::version::TLS13];
    let rank = |v: Option<&str>, auto: u8| match v {
        None | Some("TLS_AUTO") => Ok(auto),
        Some("TLSV1_0" | "TLSV1_1" | "TLSV1_2") => Ok(2),
        Some("TLSV1_3") => Ok(3),
        Some(other) => Err(TerminationError::Version(format!(
            "unknown TLS version {other:?}: use TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2 or TLSV1_3"
        ))),
    };
    match (rank(min, 2)?, rank(max, 3)?) {
        (2, 3) => Ok(&BOTH),
        (2, 2) => Ok(&BOTH[..1]),
        (3, 3) => Ok(&BOTH[1..]),
        _ => Err(TerminationError::Version(format!(
            "minProtocolVersion {} is above maxProtocolVersion {}",
            min.unwrap_or("TLS_AUTO"),
            max.unwrap_or("TLS_AUTO")
        ))),
    }
}

/// webpki's check, then one of the client certificate's SANs (DNS or URI) must be among
/// `names`, as Envoy's `match_subject_alt_names` requires.
#[derive(Debug)]
struct NamedClients {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for NamedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = CertInfo::of_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("client certificate: {e}")))?;
        let named = info
            .dns_sans
            .iter()
            .chain(&info.uri_sans)
            .any(|san| self.names.contains(san));
        if !named {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn simple<'a>(chain: &'a str, key: &'a str) -> Termination<'a> {
        Termination {
            chain_pem: chain,
            key_pem: key,
            clients: Clients::Anonymous,
            min_version: None,
            max_version: None,
            alpn: &[b"h2", b"http/1.1"],
        }
    }

    #[test]
    fn mistakes_say_which_part_is_wrong() {
        let (chain, key) = self_signed("httpbin.example.com");
        assert!(server_config(&simple(&chain, &key)).is_ok());
        let e = server_config(&simple("garbage", &key)).unwrap_err();
        assert!(e.to_string().starts_with("the server certificate"), "{e}");
        let e = server_config(&simple(&chain, "garbage")).unwrap_err();
        assert!(e.to_string().starts_with("the private key"), "{e}");
        let (_, other_key) = self_signed("other");
        let e = server_config(&simple(&chain, &other_key)).unwrap_err();
        assert!(
            e.to_string().contains("does not belong to the certificate"),
            "{e}"
        );
        let mut t = simple(&chain, &key);
        t.min_version = Some("TLSV1_3");
        t.max_version = Some("TLSV1_2");
        let e = server_config(&t).unwrap_err();
        assert!(e.to_string().contains("above maxProtocolVersion"), "{e}");
        t.clients = Clients::Verified {
            ca_pem: "none".into(),
            subject_alt_names: Vec::new(),
            required: true,
        };
        t.min_version = None;
        let e = server_config(&t).unwrap_err();
        assert!(e.to_string().starts_with("the CA certificates"), "{e}");
    }
}

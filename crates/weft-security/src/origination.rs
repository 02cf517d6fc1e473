//! TLS a sidecar originates to servers outside the mesh, as a DestinationRule's `SIMPLE`
//! and `MUTUAL` modes ask: the server's chain checked against the CA bundle given or, as
//! Istio does by default (`VERIFY_CERTIFICATE_AT_CLIENT`), the system's; its name against
//! `subjectAltNames` or else the SNI; a client certificate shown for `MUTUAL`.

use crate::cert::{chain_der, CertError};
use crate::tls::TlsError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// How the server's certificate is checked.
pub enum ServerCheck {
    /// Chained to `roots` and valid for one of `names`, or for the SNI when `names` is
    /// empty.
    Verify {
        roots: RootCertStore,
        names: Vec<String>,
    },
    /// `insecureSkipVerify`: any certificate, as long as the server holds its key.
    Skip,
}

/// The roots in a PEM bundle (`caCertificates`).
pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in chain_der(pem).map_err(TlsError::Root)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Anchor(e.to_string()))?;
    }
    Ok(roots)
}

/// The system's CA bundle (`SSL_CERT_FILE` or the distribution's, as OpenSSL finds it).
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "no certificates found".to_string(), |e| e.to_string());
        return Err(TlsError::Root(CertError::Pem(format!(
            "the system's CA bundle: {why}"
        ))));
    }
    Ok(roots)
}

/// A client certificate chain and its key, both PEM (`clientCertificate`, `privateKey`).
pub struct ClientCertificate {
    pub chain_pem: String,
    pub key_pem: String,
}

/// The client config for one origination, offering `alpn`.
pub fn client_config(
    check: ServerCheck,
    client: Option<&ClientCertificate>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        ServerCheck::Verify { roots, names } => Arc::new(Named {
            inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Anchor(e.to_string()))?,
            names: names
                .iter()
                .map(|n| {
                    ServerName::try_from(n.clone()).map_err(|_| {
                        TlsError::Anchor(format!("subjectAltNames: {n:?} is not a DNS name or IP"))
                    })
                })
                .collect::<Result<_, _>>()?,
        }),
        ServerCheck::Skip => Arc::new(Unverified(provider.signature_verification_algorithms)),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some(c) => {
            let chain = chain_der(&c.chain_pem).map_err(TlsError::Chain)?;
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
                .map_err(|e| TlsError::Key(rustls::Error::General(e.to_string())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::Key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// webpki's check, against `names` instead of the SNI when there are any.
#[derive(Debug)]
struct Named {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for Named {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((first, rest)) = self.names.split_first() else {
            return self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            );
        };
        let verify = |name| {
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        };
        rest.iter()
            .fold(verify(first), |found, name| found.or_else(|_| verify(name)))
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

/// `insecureSkipVerify`: the chain and name are not checked; the handshake's signatures
/// still are.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

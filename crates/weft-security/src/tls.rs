//! Mutual TLS between sidecars, as Istio's `ISTIO_MUTUAL`: each side shows a certificate
//! from the mesh CA and checks the other's against the mesh root. Workload certificates
//! name a SPIFFE ID, not a DNS name, so the client checks the server's URI SAN against the
//! identities the destination may have, and the server reads the client's identity from
//! its certificate (`source.principal`).

use crate::cert::{chain_der, CertError, CertInfo};
use crate::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::sync::Arc;

/// What Istio's sidecars offer for TCP between them: the peer-metadata exchange, then plain
/// mTLS.
pub const ALPN_PEER_EXCHANGE: &[u8] = b"istio-peer-exchange";
pub const ALPN_ISTIO: &[u8] = b"istio";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the mesh root: {0}")]
    Root(CertError),
    #[error("the mesh root is not a usable trust anchor: {0}")]
    Anchor(String),
    #[error("the workload certificate: {0}")]
    Chain(CertError),
    #[error("the workload key: {0}")]
    Key(rustls::Error),
    #[error("cannot build the TLS config: {0}")]
    Config(rustls::Error),
}

/// The certificate a side presents now; rotation swaps what this returns, and each new
/// handshake takes the newest.
pub trait CurrentCertificate: Send + Sync + std::fmt::Debug {
    fn current(&self) -> Option<Arc<CertifiedKey>>;
}

/// A chain (leaf first, PEM) and its key, as rustls presents them.
pub fn certified_key(
    chain_pem: &str,
    key: &PrivateKeyDer<'_>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = chain_der(chain_pem).map_err(TlsError::Chain)?;
    let key = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(TlsError::Key)?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// The mesh root, as both sides trust it.
#[derive(Debug, Clone)]
pub struct MeshRoot {
    roots: Arc<RootCertStore>,
}

impl MeshRoot {
    pub fn from_pem(pem: &str) -> Result<MeshRoot, TlsError> {
        let mut roots = RootCertStore::empty();
        for der in chain_der(pem).map_err(TlsError::Root)? {
            roots
                .add(der)
                .map_err(|e| TlsError::Anchor(e.to_string()))?;
        }
        Ok(MeshRoot {
            roots: Arc::new(roots),
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which server identities a client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accept {
    /// Any workload of the trust domain (Istio, when a destination declares no service
    /// accounts).
    TrustDomain(String),
    /// One of these (the destination's service accounts, DestinationRule `subjectAltNames`).
    Identities(Vec<Identity>),
}

impl Accept {
    fn admits(&self, id: &Identity) -> bool {
        match self {
            Accept::TrustDomain(td) => &id.trust_domain == td,
            Accept::Identities(ids) => ids.contains(id),
        }
    }
}

/// A client's side: its certificate, the root, the identities it accepts, what it offers
/// by ALPN.
pub fn client_config(
    root: &MeshRoot,
    certificate: Arc<dyn CurrentCertificate>,
    accept: Accept,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = SpiffeServerVerifier {
        root: root.clone(),
        accept,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(Presents(certificate)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A server's side: its certificate, and client certificates required and checked against
/// the root.
pub fn server_config(
    root: &MeshRoot,
    certificate: Arc<dyn CurrentCertificate>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        root.roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(Arc::new(Presents(certificate)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The SPIFFE identity of the other side, once the handshake is done.
pub fn peer_identity(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<Identity> {
    let leaf = peer_certificates?.first()?;
    CertInfo::of_der(leaf).ok()?.identity()
}

#[derive(Debug)]
struct Presents(Arc<dyn CurrentCertificate>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for Presents {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }
}

/// The chain must lead to the mesh root and the leaf name an accepted SPIFFE ID; the DNS
/// name the client dialled plays no part, as in Istio.
#[derive(Debug)]
struct SpiffeServerVerifier {
    root: MeshRoot,
    accept: Accept,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::InvalidCertificate(webpki_error(e)))?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.root.roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| rustls::Error::InvalidCertificate(webpki_error(e)))?;
        let identity = CertInfo::of_der(end_entity)
            .ok()
            .and_then(|info| info.identity());
        match identity {
            Some(id) if self.accept.admits(&id) => Ok(ServerCertVerified::assertion()),
            // rustls shows a certificate error's own context as Debug; this reads as a
            // sentence in the log line.
            Some(id) => Err(rustls::Error::Other(rustls::OtherError(Arc::new(
                UnexpectedIdentity(id.to_string()),
            )))),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the peer is {0}, which this destination does not accept")]
struct UnexpectedIdentity(String);

/// rustls' own mapping of webpki's errors, for the common cases.
fn webpki_error(e: webpki::Error) -> rustls::CertificateError {
    use rustls::CertificateError as C;
    match e {
        webpki::Error::CertExpired { .. } => C::Expired,
        webpki::Error::CertNotValidYet { .. } => C::NotValidYet,
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
        webpki::Error::CertNotValidForName(_) => C::NotValidForName,
        other => C::Other(rustls::OtherError(Arc::new(WebpkiError(other.to_string())))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WebpkiError(String);

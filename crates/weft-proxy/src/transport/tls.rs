//! Istio's mTLS on the data path. Inbound, a sidecar caller is told from an app's own TLS by
//! the ALPN it offers, before anything is decrypted; its TLS is terminated and its SPIFFE ID
//! read from its certificate. Outbound, mTLS is originated to endpoints that have a sidecar,
//! offering Istio's ALPN for the protocol that will follow and checking the server's
//! identity against the ones the destination may have.

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use weft_security::origination::{self, ClientCertificate, ServerCheck};
use weft_security::tls::{self as mesh, Accept, CurrentCertificate, MeshRoot, TlsError};
use weft_security::Identity;

/// A handshake that has not finished by then is dropped (Envoy's listener default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server side picks from a client's offer, first match in this order: a named
/// protocol before plain `istio`. Never `istio-peer-exchange`: Weft learns the peer from its
/// certificate and the registry and does not speak the in-band exchange that value asks for.
const SERVED: [&[u8]; 7] = [
    b"istio-h2",
    b"istio-http/1.1",
    b"istio-http/1.0",
    b"h2",
    b"http/1.1",
    b"http/1.0",
    b"istio",
];

/// Which of Istio's ALPN offers an outbound connection makes, by what it will carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
    Tcp,
}

impl Alpn {
    const ALL: [Alpn; 3] = [Alpn::Http1, Alpn::Http2, Alpn::Tcp];

    /// Istio's sidecars offer these (its `istio.alpn` filter per upstream protocol, and
    /// `ALPNInMeshWithMxc` for TCP).
    fn offer(self) -> &'static [&'static [u8]] {
        match self {
            Alpn::Http1 => &[b"istio-http/1.1", b"istio", b"http/1.1"],
            Alpn::Http2 => &[b"istio-h2", b"istio", b"h2"],
            Alpn::Tcp => &[b"istio-peer-exchange", b"istio"],
        }
    }

    /// What a TLS origination outside the mesh offers: the plain protocol names.
    fn external_offer(self) -> &'static [&'static [u8]] {
        match self {
            Alpn::Http1 => &[b"http/1.1"],
            Alpn::Http2 => &[b"h2"],
            Alpn::Tcp => &[],
        }
    }

    pub fn index(self) -> usize {
        Alpn::ALL.iter().position(|a| *a == self).unwrap_or(0)
    }
}

/// What the server side learnt from a sidecar's handshake.
#[derive(Debug, Clone)]
pub struct MtlsPeer {
    /// The caller's SPIFFE ID, as `source.principal`; `None` for a mesh certificate that
    /// names none.
    pub principal: Option<Arc<str>>,
    /// The caller said it sends HTTP (`istio-http/1.1`, `istio-h2`...), or TCP (`istio`).
    pub http: bool,
    /// The server name the caller asked for: Istio's `outbound_.PORT_.SUBSET_.HOST`.
    pub sni: Option<Arc<str>>,
}

/// This proxy's side of the mesh's mTLS: its certificate, the root, and the server config
/// every inbound handshake shares.
pub struct MeshTls {
    root: MeshRoot,
    certificate: Arc<dyn CurrentCertificate>,
    acceptor: TlsAcceptor,
    trust_domain: String,
    /// This proxy's SPIFFE ID, as metrics name the principal on its side.
    pub own: Arc<str>,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").field("own", &self.own).finish()
    }
}

impl MeshTls {
    pub fn new(
        root_pem: &str,
        certificate: Arc<dyn CurrentCertificate>,
        own: &Identity,
    ) -> Result<MeshTls, TlsError> {
        let root = MeshRoot::from_pem(root_pem)?;
        let server: ServerConfig = mesh::server_config(&root, certificate.clone(), &SERVED)?;
        Ok(MeshTls {
            root,
            certificate,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            trust_domain: own.trust_domain.clone(),
            own: own.to_string().into(),
        })
    }

    /// Terminates a sidecar's mTLS: the client's certificate must chain to the mesh root.
    pub async fn accept<S>(&self, io: S) -> io::Result<(server::TlsStream<S>, MtlsPeer)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, Box::pin(self.acceptor.accept(io)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (_, session) = stream.get_ref();
        let principal = mesh::peer_identity(session.peer_certificates())
            .map(|id| Arc::<str>::from(id.to_string()));
        let http = session
            .alpn_protocol()
            .is_some_and(|p| p != b"istio" && p != b"istio-peer-exchange");
        let sni = session.server_name().map(Arc::from);
        Ok((
            stream,
            MtlsPeer {
                principal,
                http,
                sni,
            },
        ))
    }

    /// How to originate mTLS to a destination whose workloads may be `identities` (SPIFFE
    /// IDs; none: any workload of the trust domain), named `sni`.
    pub fn originate(
        &self,
        identities: &[String],
        sni: &str,
        alpn: Alpn,
    ) -> Result<Origination, OriginateError> {
        let accept = if identities.is_empty() {
            Accept::TrustDomain(self.trust_domain.clone())
        } else {
            Accept::Identities(
                identities
                    .iter()
                    .map(|id| {
                        Identity::parse(id).map_err(|e| OriginateError::Identity(e.to_string()))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        let config: ClientConfig =
            mesh::client_config(&self.root, self.certificate.clone(), accept, alpn.offer())?;
        let sni = ServerName::try_from(sni.to_string())
            .map_err(|_| OriginateError::ServerName(sni.to_string()))?;
        Ok(Origination {
            connector: TlsConnector::from(Arc::new(config)),
            sni,
        })
    }
}

/// Terminates TLS for a Gateway server with its config, within the handshake timeout.
pub async fn terminate<S>(config: Arc<ServerConfig>, io: S) -> io::Result<server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(io))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// A DestinationRule's `SIMPLE` or `MUTUAL` settings, with the files they name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OriginateTls {
    /// `sni`, else the service's host.
    pub sni: String,
    /// `subjectAltNames`: the names the server's certificate may have; empty: the SNI.
    pub subject_alt_names: Vec<String>,
    /// `caCertificates`; `None`: the system's CA bundle.
    pub ca_certificates: Option<std::path::PathBuf>,
    /// `MUTUAL`: `clientCertificate` and `privateKey`.
    pub client_certificate: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// `credentialName`'s Secret, in place of the files.
    pub credential: Option<SecretTls>,
    pub insecure_skip_verify: bool,
}

/// What a DestinationRule's `credentialName` Secret holds for the client.
#[derive(Clone, PartialEq, serde::Serialize)]
pub struct SecretTls {
    /// `Secret ns/name`.
    pub from: String,
    /// The CA the server's certificate must chain to; `None`: the system's CA bundle.
    #[serde(skip)]
    pub ca_pem: Option<String>,
    /// `MUTUAL`: the client's chain and key.
    #[serde(skip)]
    pub client: Option<(String, String)>,
}

/// Never the key: a cluster's Debug output may reach a log.
impl std::fmt::Debug for SecretTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretTls")
            .field("from", &self.from)
            .field("ca", &self.ca_pem.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OriginateError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot read {field} {path}: {error}")]
    File {
        field: &'static str,
        path: String,
        error: io::Error,
    },
    #[error("a destination identity is not a SPIFFE ID: {0}")]
    Identity(String),
    #[error("{0:?} cannot be a TLS server name")]
    ServerName(String),
}

/// mTLS to one destination with one ALPN offer: built once per cluster and reused by every
/// connection (with rustls' session resumption).
pub struct Origination {
    connector: TlsConnector,
    sni: ServerName<'static>,
}

impl std::fmt::Debug for Origination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origination")
            .field("sni", &self.sni)
            .finish()
    }
}

impl Origination {
    /// A DestinationRule's `SIMPLE` or `MUTUAL` TLS, reading the files it names.
    pub fn external(settings: &OriginateTls, alpn: Alpn) -> Result<Origination, OriginateError> {
        let read = |field: &'static str, path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|error| OriginateError::File {
                field,
                path: path.display().to_string(),
                error,
            })
        };
        let check = if settings.insecure_skip_verify {
            ServerCheck::Skip
        } else {
            let ca_pem = match (&settings.credential, &settings.ca_certificates) {
                (Some(secret), _) => secret.ca_pem.clone(),
                (None, Some(path)) => Some(read("caCertificates", path)?),
                (None, None) => None,
            };
            let roots = match ca_pem {
                Some(pem) => origination::roots_from_pem(&pem)?,
                None => origination::system_roots()?,
            };
            ServerCheck::Verify {
                roots,
                names: settings.subject_alt_names.clone(),
            }
        };
        let client = match (&settings.credential, &settings.client_certificate) {
            (Some(secret), _) => secret
                .client
                .clone()
                .map(|(chain_pem, key_pem)| ClientCertificate { chain_pem, key_pem }),
            (None, Some((cert, key))) => Some(ClientCertificate {
                chain_pem: read("clientCertificate", cert)?,
                key_pem: read("privateKey", key)?,
            }),
            (None, None) => None,
        };
        let config = origination::client_config(check, client.as_ref(), alpn.external_offer())?;
        let sni = ServerName::try_from(settings.sni.clone())
            .map_err(|_| OriginateError::ServerName(settings.sni.clone()))?;
        Ok(Origination {
            connector: TlsConnector::from(Arc::new(config)),
            sni,
        })
    }

    /// The handshake over `tcp`; the server's SPIFFE ID once it is checked.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<(Io, Option<Arc<str>>)> {
        // Boxed: the handshake's state would otherwise widen every future that may connect,
        // plaintext connections' included, for their whole life.
        let stream = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            Box::pin(self.connector.connect(self.sni.clone(), tcp)),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        let principal = mesh::peer_identity(stream.get_ref().1.peer_certificates())
            .map(|id| Arc::<str>::from(id.to_string()));
        Ok((Io::Tls(Box::new(stream)), principal))
    }
}

/// An upstream connection, plaintext or mTLS.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

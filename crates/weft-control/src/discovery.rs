//! The discovery stream's server side: one task per proxy that sends its view's updates in
//! order and records its acknowledgements.

mod server;

use crate::config::ConfigState;
use crate::encoded::Encoded;
use crate::mesh::{ProxyId, Subscription};
use crate::registrations::withdraw_later;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Status, Streaming};
use weft_discovery::discovery::{proxy_message, Hello, ProxyMessage};
use weft_security::cert::CertInfo;

pub use server::DiscoveryServer;

type PeerCerts = Arc<Vec<tonic::transport::CertificateDer<'static>>>;

pub struct DiscoveryService {
    pub state: Arc<ConfigState>,
    /// On 15012: the proxy must present a workload certificate, and its Hello must be for the
    /// namespace and service account the certificate names.
    pub require_certificate: bool,
}

impl DiscoveryService {
    /// Whether a workload certificate proved the Hello's namespace and service account.
    fn check_certificate(
        &self,
        certs: Option<PeerCerts>,
        hello: &mut Hello,
    ) -> Result<bool, Status> {
        if !self.require_certificate {
            return Ok(false);
        }
        let identity = certs
            .and_then(|certs| certs.first().and_then(|c| CertInfo::of_der(c).ok()))
            .and_then(|info| info.identity())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "discovery on the TLS port needs a workload certificate (ask the certificate service first)",
                )
            })?;
        if hello.namespace != identity.namespace
            || !(hello.service_account.is_empty()
                || hello.service_account == identity.service_account)
        {
            return Err(Status::permission_denied(format!(
                "the certificate is for {identity}, but Hello claims namespace {:?} and service account {:?}",
                hello.namespace, hello.service_account
            )));
        }
        hello.service_account = identity.service_account;
        Ok(true)
    }
}

impl DiscoveryService {
    /// Checks the proxy's Hello and starts its session; the messages to send come out of
    /// the receiver, ready-encoded.
    async fn open(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<mpsc::Receiver<Bytes>, Status> {
        let certs = request.peer_certs();
        let mut inbound = request.into_inner();
        let mut hello = match inbound.message().await? {
            Some(ProxyMessage {
                message: Some(proxy_message::Message::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "a proxy's first message must be Hello (see proto/weft/discovery/v1/discovery.proto)",
                ))
            }
        };
        if hello.name.is_empty() || hello.namespace.is_empty() {
            return Err(Status::invalid_argument(
                "Hello needs the proxy's name and namespace (weft proxy --workload-name, --namespace)",
            ));
        }
        let certified = self.check_certificate(certs, &mut hello)?;
        let (tx, rx) = mpsc::channel(4);
        let session = Session {
            state: self.state.clone(),
            certified,
            id: ProxyId {
                namespace: hello.namespace.clone(),
                name: hello.name.clone(),
            },
            tx,
            sent: String::new(),
        };
        tokio::spawn(session.run(hello, inbound));
        Ok(rx)
    }
}

struct Session {
    state: Arc<ConfigState>,
    /// A workload certificate proved who the proxy is: it may register its workload, bound
    /// to that identity, without the join token.
    certified: bool,
    id: ProxyId,
    tx: mpsc::Sender<Bytes>,
    /// The version of the last update sent on this stream.
    sent: String,
}

impl Session {
    async fn run(mut self, mut hello: Hello, mut inbound: Streaming<ProxyMessage>) {
        let joined = self.certified || self.state.join_token.matches(&hello.join_token);
        hello.join_token.clear();
        let announced = if joined {
            self.state.announce(&hello)
        } else {
            if !hello.address.is_empty() {
                tracing::warn!(proxy = %self.id, address = %hello.address,
                    "proxy announced a workload without the mesh's join token: it is sent config but is no endpoint (weft proxy --credential-file on 15012, or --join-token-file)");
            }
            None
        };
        let (first, mut sub) = self.state.mesh().connect(hello, announced.is_some());
        let stream = sub.stream;
        tracing::info!(proxy = %self.id, "proxy connected");
        let mut alive = self.send_first(first).await;
        while alive {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(m)) => self.receive(stream, m),
                    Ok(None) | Err(_) => alive = false,
                },
                update = sub.updates.recv() => alive = match update {
                    Ok(u) if u.base_version == self.sent => self.send(stream, &u).await,
                    // Fell behind, or an update from before the last full one: start afresh.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.resync(stream, &mut sub).await,
                    Err(broadcast::error::RecvError::Closed) => self.resync(stream, &mut sub).await,
                },
                _ = sub.moved.changed() => alive = self.resync(stream, &mut sub).await,
            }
        }
        tracing::info!(proxy = %self.id, "proxy disconnected");
        self.state.mesh().disconnect(&self.id, stream);
        if let Some(key) = announced {
            tokio::spawn(withdraw_later(self.state.clone(), key));
        }
    }

    fn receive(&self, stream: u64, m: ProxyMessage) {
        let certified = self.certified;
        let mut mesh = self.state.mesh();
        match m.message {
            Some(proxy_message::Message::Ack(a)) => mesh.acked(&self.id, stream, &a.version),
            Some(proxy_message::Message::Nack(n)) => {
                mesh.nacked(&self.id, stream, &n.version, &n.reason)
            }
            // Only a proxy whose certificate was checked can say what it holds.
            Some(proxy_message::Message::Certificate(c)) if certified => {
                mesh.certificate_held(&self.id, stream, c.chain_pem)
            }
            Some(proxy_message::Message::Certificate(_)) => {}
            Some(proxy_message::Message::Hello(_)) | None => {}
        }
    }

    async fn send_first(&mut self, first: Arc<Encoded>) -> bool {
        self.sent = first.version.clone();
        self.tx.send(first.message(self.certified)).await.is_ok()
    }

    async fn send(&mut self, stream: u64, update: &Encoded) -> bool {
        self.state.mesh().sent(&self.id, stream, &update.version);
        self.sent = update.version.clone();
        self.tx.send(update.message(self.certified)).await.is_ok()
    }

    async fn resync(&mut self, stream: u64, sub: &mut Subscription) -> bool {
        let fresh = self.state.mesh().resubscribe(&self.id, stream, "");
        match fresh {
            Some((first, fresh)) => {
                *sub = fresh;
                self.send_first(first).await
            }
            // Superseded by a newer stream of the same proxy.
            None => false,
        }
    }
}

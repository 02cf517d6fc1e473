//! `weft proxy --control-plane ADDR`: the proxy's side of the discovery stream
//! (`proto/weft/discovery/v1/discovery.proto` in weft-discovery states the contract).

use super::ConfigStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_api::Resource;
use weft_discovery::discovery::discovery_client::DiscoveryClient;
use weft_discovery::discovery::{
    proxy_message, Ack, CertificateHeld, Hello, Nack, ProxyMessage, Update,
};
use weft_discovery::wire::{self, Key};

/// The largest update a proxy takes: a full snapshot of everything a big mesh holds.
const MAX_UPDATE: usize = 1 << 30;

/// Exponential backoff with full jitter between reconnects.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(15),
        }
    }
}

impl Backoff {
    /// The wait before attempt `n` (0-based): uniformly random up to `initial · 2ⁿ`, capped,
    /// so proxies that lost the same control plane do not all come back at once.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1 << attempt.min(20))
            .min(self.max);
        ceiling.mul_f64(fastrand::f64())
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(
        "cannot reach the control plane at {endpoint}: {source} (is `weft control` running there?)"
    )]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("the control plane refused the stream: {0}")]
    Refused(tonic::Status),
    #[error("the stream broke: {0}")]
    Broken(tonic::Status),
    #[error("update {version} builds on {base:?} but this stream holds {held:?}")]
    OutOfOrder {
        version: String,
        base: String,
        held: String,
    },
}

/// Follows a control plane for as long as the proxy runs. Each version is acknowledged or
/// rejected; a rejected version leaves the last good one serving, and so does a lost control
/// plane, indefinitely, while the source reconnects.
pub struct StreamSource {
    /// `http://host:15010`, or `https://host:15012` with `tls`.
    pub endpoint: String,
    /// The workload certificate that opens 15012, renewed as it ages; each connection uses
    /// the newest.
    pub tls: Option<crate::identity::Certificates>,
    /// Who this proxy is; `held_version` is filled in on each connection.
    pub hello: Hello,
    pub backoff: Backoff,
}

/// The objects a stream has delivered, decoded; an object that did not decode keeps its
/// error so the version holding it is rejected.
type Received = BTreeMap<Key, Result<Resource, String>>;

impl StreamSource {
    pub async fn run(self, store: Arc<ConfigStore>) {
        let mut serving = Serving::default();
        let mut attempt = 0;
        loop {
            let mut progressed = false;
            match self.session(&store, &mut serving, &mut progressed).await {
                Ok(()) => tracing::warn!("the control plane closed the stream"),
                Err(e) => tracing::warn!("{e}; serving the last good config meanwhile"),
            }
            if progressed {
                attempt = 0;
            }
            tokio::time::sleep(self.backoff.delay(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn session(
        &self,
        store: &ConfigStore,
        serving: &mut Serving,
        progressed: &mut bool,
    ) -> Result<(), StreamError> {
        let connect = |source| StreamError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        };
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(self.endpoint.clone()).map_err(connect)?;
        if let Some(certificates) = &self.tls {
            let cert = certificates.next_after(None).await;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    &*certificates.root_pem,
                ))
                .domain_name(weft_discovery::CONTROL_PLANE_SAN)
                .identity(cert.tls_identity());
            endpoint = endpoint.tls_config(tls).map_err(connect)?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(connect)?;
        let (tx, rx) = mpsc::channel(4);
        let hello = Hello {
            held_version: serving.version.clone(),
            ..self.hello.clone()
        };
        let _ = tx.try_send(message(proxy_message::Message::Hello(hello)));
        let mut updates = DiscoveryClient::new(channel)
            // tonic's 4 MiB default is one mesh of a few thousand services without Sidecars.
            .max_decoding_message_size(MAX_UPDATE)
            .stream(ReceiverStream::new(rx))
            .await
            .map_err(StreamError::Refused)?
            .into_inner();
        tracing::info!(endpoint = %self.endpoint, "connected to the control plane");
        let mut stream = StreamState {
            received: serving.received.clone(),
            version: serving.version.clone(),
        };
        // The certificate reported on this stream: each newer one is reported too.
        let mut reported: Option<String> = None;
        loop {
            let reply = tokio::select! {
                update = updates.message() => {
                    let Some(update) = update.map_err(StreamError::Broken)? else {
                        break;
                    };
                    *progressed = true;
                    stream.take(update, store, serving).await?
                }
                held = next_certificate(self.tls.as_ref(), reported.as_deref()) => {
                    reported = Some(held.leaf.serial_number.clone());
                    proxy_message::Message::Certificate(CertificateHeld {
                        chain_pem: held.chain_pem.clone(),
                    })
                }
            };
            if tx.send(message(reply)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// What the proxy serves: the version it acknowledged last and the objects behind it.
#[derive(Default)]
struct Serving {
    version: String,
    received: Received,
}

/// What the current stream has delivered, which after a rejection is ahead of what the
/// proxy serves.
struct StreamState {
    received: Received,
    version: String,
}

impl StreamState {
    async fn take(
        &mut self,
        update: Update,
        store: &ConfigStore,
        serving: &mut Serving,
    ) -> Result<proxy_message::Message, StreamError> {
        let version = update.version.clone();
        if update.full {
            if update.unchanged && version == serving.version {
                self.received = serving.received.clone();
                self.version = version.clone();
                return Ok(proxy_message::Message::Ack(Ack { version }));
            }
            self.received.clear();
        } else if update.base_version != self.version {
            return Err(StreamError::OutOfOrder {
                version,
                base: update.base_version,
                held: self.version.clone(),
            });
        }
        for r in &update.resources {
            match r.key.as_ref().map(Key::from_wire) {
                Some(Ok(key)) => {
                    self.received.insert(key, wire::decode(r));
                }
                Some(Err(e)) => {
                    return Ok(nack(store, version, e));
                }
                None => return Ok(nack(store, version, "a resource without a key".into())),
            }
        }
        for k in &update.removed {
            if let Ok(key) = Key::from_wire(k) {
                self.received.remove(&key);
            }
        }
        self.version = version.clone();
        let resources: Result<Vec<Resource>, String> = self.received.values().cloned().collect();
        let applied = match resources {
            Ok(resources) => store.apply(resources).await,
            Err(e) => {
                store.reject(e.clone());
                Err(e)
            }
        };
        Ok(match applied {
            Ok(_) => {
                serving.version = version.clone();
                serving.received = self.received.clone();
                proxy_message::Message::Ack(Ack { version })
            }
            Err(reason) => proxy_message::Message::Nack(Nack { version, reason }),
        })
    }
}

fn nack(store: &ConfigStore, version: String, reason: String) -> proxy_message::Message {
    store.reject(reason.clone());
    proxy_message::Message::Nack(Nack { version, reason })
}

/// The next certificate to report; never, without one.
async fn next_certificate(
    tls: Option<&crate::identity::Certificates>,
    reported: Option<&str>,
) -> Arc<crate::identity::WorkloadCertificate> {
    match tls {
        Some(certificates) => certificates.next_after(reported).await,
        None => std::future::pending().await,
    }
}

fn message(m: proxy_message::Message) -> ProxyMessage {
    ProxyMessage { message: Some(m) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let b = Backoff::default();
        let waits: Vec<Duration> = (0..200).map(|_| b.delay(3)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(800)));
        assert!(waits.iter().any(|w| *w < Duration::from_millis(400)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(400)));
        assert!((0..200).all(|_| b.delay(40) <= b.max));
    }
}

//! Simulated proxies: each a discovery stream on its own HTTP/2 connection, as a real proxy
//! holds one, that keeps the stream's resource set and acknowledges every update at once.
//! Decoding the objects is the proxy's work, not the control plane's, so they are only
//! digested.

use prost::Message;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use weft_discovery::discovery::discovery_client::DiscoveryClient;
use weft_discovery::discovery::{
    proxy_message, Ack, Hello, ProxyMessage, Resource, ResourceKey, Update,
};
use weft_discovery::wire;

/// As `weft proxy`: tonic's 4 MiB default is below a full snapshot of a large unscoped mesh.
const MAX_UPDATE: usize = 1 << 30;

pub struct Event {
    pub proxy: usize,
    /// When the update was acknowledged (or the stream failed).
    pub at: Instant,
    pub what: What,
}

pub enum What {
    Update {
        full: bool,
        /// The update's encoded size.
        bytes: usize,
        /// Resources held after applying it.
        held: usize,
        /// What an incremental update carried; left empty for full ones.
        resources: Vec<Resource>,
        removed: Vec<ResourceKey>,
    },
    /// The proxy could not get its first update and tries again.
    Retried,
    /// The stream ended; the proxy is gone for the rest of the run.
    Failed(String),
}

/// What simulated proxy `index` in `namespace` announces: no address, so it is not an
/// endpoint of anything.
pub fn hello(index: usize, namespace: String) -> Hello {
    Hello {
        name: format!("sim-{index}"),
        namespace,
        address: String::new(),
        labels: HashMap::from([("app".to_string(), "sim".to_string())]),
        proxy_version: "sim".into(),
        ..Default::default()
    }
}

/// Starts proxy `index`, announcing `hello`; it reports every update to `events`. Until it
/// has its first update it reconnects with `weft proxy`'s backoff; an impatient proxy also
/// gives up on a connection as `weft proxy` does, a patient one never times out.
pub fn spawn(
    index: usize,
    grpc: SocketAddr,
    hello: Hello,
    patient: bool,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let reason = match follow(index, grpc, &hello, patient, &events).await {
            Ok(()) => "the control plane closed the stream".to_string(),
            Err(e) => e,
        };
        let _ = events.send(Event {
            proxy: index,
            at: Instant::now(),
            what: What::Failed(format!("sim-{index}: {reason}")),
        });
    })
}

async fn follow(
    index: usize,
    grpc: SocketAddr,
    hello: &Hello,
    patient: bool,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .map_err(|e| e.to_string())?;
    if !patient {
        // The same as `weft proxy`.
        endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
    }
    let mut state = StreamState::default();
    let mut attempt = 0;
    loop {
        let ended = session(index, &endpoint, hello, &mut state, events).await;
        // Like `weft proxy`, retry until the control plane answers; a stream that breaks
        // later ends the simulated proxy, whose updates would no longer be comparable.
        if !state.version.is_empty() || events.is_closed() {
            return ended;
        }
        let _ = events.send(Event {
            proxy: index,
            at: Instant::now(),
            what: What::Retried,
        });
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// `weft proxy`'s backoff: uniformly random up to 100 ms · 2ⁿ, at most 15 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(20))
        .min(Duration::from_secs(15))
        .mul_f64(fastrand::f64())
}

/// One connection and its stream, until the stream ends.
async fn session(
    index: usize,
    endpoint: &tonic::transport::Endpoint,
    hello: &Hello,
    state: &mut StreamState,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {}", endpoint.uri(), causes(&e)))?;
    let (tx, rx) = mpsc::channel(4);
    let _ = tx.try_send(message(proxy_message::Message::Hello(hello.clone())));
    let mut updates = DiscoveryClient::new(channel)
        .max_decoding_message_size(MAX_UPDATE)
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("the stream was refused: {s}"))?
        .into_inner();
    while let Some(update) = updates
        .message()
        .await
        .map_err(|s| format!("the stream broke: {s}"))?
    {
        let bytes = update.encoded_len();
        let (full, resources, removed) = state.take(update)?;
        let ack = proxy_message::Message::Ack(Ack {
            version: state.version.clone(),
        });
        if tx.send(message(ack)).await.is_err() {
            return Ok(());
        }
        let what = What::Update {
            full,
            bytes,
            held: state.held.len(),
            resources,
            removed,
        };
        let event = Event {
            proxy: index,
            at: Instant::now(),
            what,
        };
        if events.send(event).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The stream's resource set: key digest → object digest, and the version it makes.
#[derive(Default)]
struct StreamState {
    held: HashMap<u64, u64>,
    version: String,
}

type Taken = (bool, Vec<Resource>, Vec<ResourceKey>);

impl StreamState {
    /// Applies an update as a real proxy does; an out-of-order delta ends the stream.
    fn take(&mut self, update: Update) -> Result<Taken, String> {
        if update.full {
            if !update.unchanged {
                self.held.clear();
            }
        } else if update.base_version != self.version {
            return Err(format!(
                "update {} builds on {:?} but this stream holds {:?}",
                update.version, update.base_version, self.version
            ));
        }
        for r in &update.resources {
            let key = r.key.as_ref().ok_or("a resource without a key")?;
            self.held
                .insert(key_digest(key), wire::content_hash(&r.json));
        }
        for k in &update.removed {
            self.held.remove(&key_digest(k));
        }
        self.version = update.version;
        Ok(if update.full {
            (true, Vec::new(), Vec::new())
        } else {
            (false, update.resources, update.removed)
        })
    }
}

fn key_digest(k: &ResourceKey) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (&k.kind, &k.namespace, &k.name).hash(&mut h);
    h.finish()
}

/// An error with its causes, which tonic's transport error leaves out of its message.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn message(m: proxy_message::Message) -> ProxyMessage {
    ProxyMessage { message: Some(m) }
}

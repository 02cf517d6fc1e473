//! Gateway mode (Istio's ingress gateway): a listener per port of the Gateway servers that
//! select this proxy, opened when a config version with the port is applied and closed when
//! a version drops it. Requests on them are HTTP, routed by that port's gateway route table.

use crate::model::Snapshot;
use crate::transport::conn::Direction;
use crate::workers::Workers;
use crate::{listener, Shared, StartError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The address gateway listeners bind; their ports come from the Gateway servers.
    pub address: IpAddr,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// The gateway's listeners after a config version was applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GatewayListeners {
    /// The config version whose Gateway servers these are.
    pub version: u64,
    pub listening: BTreeMap<u16, SocketAddr>,
    /// Ports that could not be bound, with why and what to do; each later version tries
    /// them again.
    pub failed: BTreeMap<u16, String>,
}

/// Follows the config store: after each applied version, closes the ports it no longer has,
/// opens the ones it has, and reports the result in the store's status.
pub(crate) async fn manage(shared: Arc<Shared>, options: GatewayOptions, workers: Workers) {
    let mut status = shared.config.subscribe();
    let mut open: HashMap<u16, PortListener> = HashMap::new();
    let mut handled = None;
    loop {
        let snapshot = shared.config.current();
        if handled != Some(snapshot.version) {
            handled = Some(snapshot.version);
            let listeners =
                reconcile(&shared, &workers, options.address, &snapshot, &mut open).await;
            shared.config.report_gateway_listeners(listeners);
        }
        // Also woken by its own report, which changes no version.
        if status.changed().await.is_err() {
            return;
        }
    }
}

async fn reconcile(
    shared: &Arc<Shared>,
    workers: &Workers,
    address: IpAddr,
    snapshot: &Snapshot,
    open: &mut HashMap<u16, PortListener>,
) -> GatewayListeners {
    let wanted = &snapshot.gateway_ports;
    let dropped: Vec<u16> = open
        .keys()
        .filter(|port| !wanted.contains_key(port))
        .copied()
        .collect();
    for port in dropped {
        if let Some(listener) = open.remove(&port) {
            listener.close().await;
            tracing::info!(
                port,
                "gateway listener closed: no Gateway server has the port"
            );
        }
    }
    let new: Vec<u16> = wanted
        .keys()
        .filter(|port| !open.contains_key(port))
        .copied()
        .collect();
    let mut failed = BTreeMap::new();
    for port in new {
        let addr = SocketAddr::new(address, port);
        match weft_discovery::listen::bind(addr) {
            Ok(socket) => {
                let addr = socket.local_addr().unwrap_or(addr);
                tracing::info!(%addr, "gateway listener open");
                let accept = listener::spawn(workers, socket, shared, Direction::Gateway);
                open.insert(port, PortListener { addr, accept });
            }
            Err(source) => {
                let error = StartError::Bind {
                    what: "a Gateway server",
                    addr,
                    source,
                }
                .to_string();
                tracing::error!("{error}; the other gateway ports serve, this one is tried again with the next config version");
                failed.insert(port, error);
            }
        }
    }
    GatewayListeners {
        version: snapshot.version,
        listening: open.iter().map(|(&port, l)| (port, l.addr)).collect(),
        failed,
    }
}

/// One gateway port's accept loops, one per worker; dropping it stops accepting.
struct PortListener {
    addr: SocketAddr,
    accept: Vec<JoinHandle<()>>,
}

impl PortListener {
    /// Stops accepting and waits until the socket is closed, so that once the version is
    /// reported new connections to the port are refused. Connections already accepted
    /// finish on their own.
    async fn close(mut self) {
        for accept in &mut self.accept {
            accept.abort();
            let _ = accept.await;
        }
    }
}

impl Drop for PortListener {
    fn drop(&mut self) {
        for accept in &self.accept {
            accept.abort();
        }
    }
}

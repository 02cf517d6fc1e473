//! Opaque TCP and TLS passthrough: route by `tcp[]` (port, destinationSubnets) or `tls[]`
//! (SNI), pick an endpoint, splice bytes both ways.

use crate::model::Snapshot;
use crate::telemetry::access_log::{Entry, Flags};
use crate::transport::conn::{ConnInfo, Direction};
use crate::transport::connect::connect_addr;
use crate::transport::splice::splice;
use crate::transport::tls::{Alpn, Io, MeshTls};
use crate::upstream::client::{self, SendError};
use crate::upstream::endpoint::Outcome;
use crate::upstream::{Cluster, ClusterConfig, Endpoint};
use crate::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use weft_api::host;
use weft_api::types::OutboundTrafficMode;

/// Where an L4 connection goes.
pub enum L4Target {
    Cluster(Arc<Cluster>),
    Passthrough(SocketAddr),
    /// Blocked by REGISTRY_ONLY, with the reason for the log.
    Blocked(String),
}

impl L4Target {
    /// The cluster as Envoy's access log and Istio's metrics name it.
    pub fn cluster_name(&self, direction: Direction) -> String {
        match self {
            // Istio names the hop to the local workload by its port.
            L4Target::Passthrough(to) if direction == Direction::Inbound => {
                ClusterConfig::istio_name("inbound", to.port(), None, "")
            }
            L4Target::Cluster(c) => c.config.name.clone(),
            L4Target::Passthrough(_) => "PassthroughCluster".into(),
            L4Target::Blocked(_) => "BlackHoleCluster".into(),
        }
    }
}

/// Routes a TCP connection by its service (named by `host` for CONNECT, else found by the
/// original destination address).
pub fn route_tcp(
    snapshot: &Snapshot,
    dst: Option<SocketAddr>,
    host_port: Option<(&str, u16)>,
) -> L4Target {
    let svc = match host_port {
        Some((h, port)) => snapshot
            .registry
            .by_host(&host::fqdn(h, &snapshot.workload.namespace))
            .filter(|s| s.port(port).is_some())
            .map(|s| (s, port)),
        None => dst.and_then(|d| {
            snapshot
                .registry
                .by_address(d.ip(), d.port())
                .map(|s| (s, d.port()))
        }),
    };
    if let Some((svc, port)) = svc {
        if let Some(clusters) = snapshot
            .tcp
            .get(&(svc.hostname.clone(), port))
            .and_then(|r| r.find(dst))
        {
            return L4Target::Cluster(clusters.pick().cluster.clone());
        }
        let name =
            crate::upstream::ClusterConfig::istio_name("outbound", port, None, &svc.hostname);
        if let Some(c) = snapshot.clusters.get(&name) {
            return L4Target::Cluster(c.clone());
        }
    }
    unknown(snapshot, dst, host_port)
}

/// Routes a TLS connection by SNI among the `tls[]` routes of its port.
pub fn route_tls(
    snapshot: &Snapshot,
    port: u16,
    sni: Option<&str>,
    dst: Option<SocketAddr>,
) -> L4Target {
    if let (Some(routes), Some(sni)) = (snapshot.tls.get(&port), sni) {
        if let Some(r) = routes.iter().find(|r| r.matches(sni, dst)) {
            return L4Target::Cluster(r.clusters.pick().cluster.clone());
        }
    }
    route_tcp(snapshot, dst, None)
}

fn unknown(
    snapshot: &Snapshot,
    dst: Option<SocketAddr>,
    host_port: Option<(&str, u16)>,
) -> L4Target {
    match (snapshot.outbound_policy, dst) {
        (OutboundTrafficMode::AllowAny, Some(dst)) => L4Target::Passthrough(dst),
        _ => L4Target::Blocked(match (host_port, dst) {
            (Some((h, p)), _) => format!("{h}:{p} is not a mesh service or ServiceEntry host"),
            (None, Some(d)) => format!("{d} is not a mesh service or ServiceEntry address"),
            _ => "no destination".into(),
        }),
    }
}

/// An upstream connection made for an L4 target.
pub struct Connected {
    pub io: Io,
    /// The endpoint, as the access log names the upstream host.
    pub host: String,
    /// The place it holds within the cluster's `maxConnections`.
    pub permit: Option<OwnedSemaphorePermit>,
    /// The server's SPIFFE ID, over mTLS.
    pub peer: Option<Arc<str>>,
}

/// Connects to the target, trying another endpoint once if the first refuses; over mTLS to
/// endpoints with a sidecar when `mesh` is given.
pub async fn connect(
    target: &L4Target,
    dst: Option<SocketAddr>,
    mesh: Option<&MeshTls>,
) -> Result<Connected, (Flags, String)> {
    match target {
        L4Target::Blocked(why) => Err((Flags::default(), why.clone())),
        L4Target::Passthrough(addr) => connect_addr(*addr)
            .await
            .map(|s| Connected {
                io: Io::Plain(s),
                host: addr.to_string(),
                permit: None,
                peer: None,
            })
            .map_err(|e| (Flags::UF, format!("{addr}: {e}"))),
        L4Target::Cluster(cluster) => {
            if let Some(why) = &cluster.config.unusable {
                return Err((Flags::NC, why.clone()));
            }
            let permit = cluster.tcp_permit().ok_or((
                Flags::UO,
                format!("{}: maxConnections reached", cluster.config.name),
            ))?;
            let mut tried: Vec<Arc<Endpoint>> = Vec::new();
            let mut last = String::new();
            for _ in 0..2 {
                let Some(ep) = cluster.pick(None, &tried, dst) else {
                    break;
                };
                let tls = cluster
                    .origination(mesh, &ep, Alpn::Tcp)
                    .map_err(|why| (Flags::UF, why))?;
                let attempt = client::connect(
                    ep.authority.as_str(),
                    tls.as_deref(),
                    cluster.config.limits.connect_timeout,
                )
                .await;
                match attempt {
                    Ok((io, peer)) => {
                        cluster.record(&ep, Outcome::Status(200));
                        return Ok(Connected {
                            io,
                            host: ep.authority.clone(),
                            permit: Some(permit),
                            peer,
                        });
                    }
                    Err(SendError::Connect(e) | SendError::Tls(e) | SendError::Reset(e)) => {
                        last = format!(
                            "{} at {} ({}): {e}",
                            cluster.config.service, ep.authority, ep.declared_by
                        )
                    }
                }
                cluster.record(&ep, Outcome::LocalFailure);
                tried.push(ep);
            }
            if tried.is_empty() {
                return Err((
                    Flags::UH,
                    format!("{} has no healthy endpoint", cluster.config.name),
                ));
            }
            Err((Flags::UF, last))
        }
    }
}

/// Splices `downstream` to the target and writes one access-log line when both sides close.
pub async fn proxy<S>(shared: &Shared, mut downstream: S, target: L4Target, conn: &ConnInfo)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let (remote, dst, direction) = (conn.remote, conn.original_dst, conn.direction);
    let mut entry = Entry {
        start: Some(SystemTime::now()),
        method: "-".into(),
        path: "-".into(),
        protocol: "-",
        downstream_remote: Some(remote),
        downstream_local: dst,
        downstream_mtls: conn.mtls.is_some(),
        downstream_peer_principal: conn.mtls.as_ref().and_then(|m| m.principal.clone()),
        requested_server_name: conn.requested_server_name.clone(),
        access_log_hint: conn.access_log_hint,
        upstream_cluster: Some(target.cluster_name(direction)),
        ..Default::default()
    };
    // Outbound and gateway connections go to another sidecar; inbound ones to the local app.
    let mesh = shared
        .tls
        .as_deref()
        .filter(|_| direction != Direction::Inbound);
    let connected = match connect(&target, dst, mesh).await {
        Ok(c) => {
            entry.upstream_host = Some(c.host);
            entry.upstream_peer_principal = c.peer;
            Some((c.io, c.permit))
        }
        Err((flags, why)) => {
            entry.flags = flags;
            tracing::debug!(%remote, "tcp connection not forwarded: {why}");
            None
        }
    };
    let inbound = direction == Direction::Inbound;
    let sample = shared
        .metrics
        .tcp_opened(&shared.config.current(), &entry, inbound);
    if let Some((mut upstream, _permit)) = connected {
        let _active = match &target {
            L4Target::Cluster(c) => Some(c.stats.connection()),
            _ => None,
        };
        (entry.bytes_received, entry.bytes_sent) = splice(
            &mut downstream,
            &mut upstream,
            sample.every,
            |received, sent| sample.bytes(received, sent),
        )
        .await;
    }
    entry.duration_ms = started.elapsed().as_millis() as u64;
    sample.closed();
    let snapshot = shared.config.current();
    let log = snapshot.telemetry.log_for(inbound);
    if log.admits(&entry) {
        shared.access_log.emit_as(log.choice.as_ref(), entry);
    }
}

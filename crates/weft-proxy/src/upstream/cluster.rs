//! A cluster at run time: its endpoints, balancer cursor, circuit-breaker counters and
//! pooled HTTP clients. Clusters outlive config versions when nothing about them changed,
//! so pooled connections and outlier state survive a reload.

use super::client::Upstream;
use super::config::{ClusterConfig, LbPolicy, UpstreamTls};
use super::endpoint::{Endpoint, Outcome};
use super::lb;
use super::stats::ClusterStats;
use crate::model::protocol::Protocol;
use crate::model::registry::Discovery;
use crate::transport::tls::{Alpn, MeshTls, Origination};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Cluster {
    pub config: ClusterConfig,
    pub endpoints: Vec<Arc<Endpoint>>,
    cursor: AtomicUsize,
    active_requests: AtomicUsize,
    pending: AtomicUsize,
    active_retries: AtomicUsize,
    /// An HTTP/1.1 connection carries one request at a time, so `maxConnections` bounds
    /// concurrent requests; TCP connections take one each too.
    connections: Arc<Semaphore>,
    pub upstream: Arc<Upstream>,
    pub stats: Arc<ClusterStats>,
    /// How to originate mTLS, per ALPN offer: built by the first connection that needs it.
    /// Built on first use, per ALPN offer; a failure is not kept, so a fixed file is read
    /// on the next connection.
    originations: [OnceLock<Arc<Origination>>; 3],
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.config.name)
    }
}

/// The circuit breaker is open: Envoy's `UO`.
#[derive(Debug)]
pub struct Overflow;

/// Holds a request's place in the cluster's limits until dropped.
pub struct Admission {
    cluster: Arc<Cluster>,
    _connection: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.cluster.active_requests.fetch_sub(1, Relaxed);
    }
}

pub struct RetryToken(Arc<Cluster>);

impl Drop for RetryToken {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Relaxed);
    }
}

impl Cluster {
    /// Builds a cluster, taking endpoint state and pooled clients from `previous` where
    /// they still apply.
    pub fn new(config: ClusterConfig, previous: Option<&Cluster>) -> Cluster {
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| {
                let fresh = Endpoint::from_config(e);
                previous
                    .and_then(|p| {
                        p.endpoints.iter().find(|old| {
                            old.authority == fresh.authority
                                && old.labels == fresh.labels
                                && old.mtls_ready == fresh.mtls_ready
                        })
                    })
                    .cloned()
                    .unwrap_or_else(|| Arc::new(fresh))
            })
            .collect();
        let stats = previous.map(|p| p.stats.clone()).unwrap_or_default();
        // Pooled connections were checked against the previous destination identities.
        let same_tls = previous.filter(|p| p.config.tls == config.tls);
        let upstream = match same_tls {
            Some(p) if p.config.limits == config.limits => p.upstream.clone(),
            _ => Arc::new(Upstream::new(&config.limits, stats.clone())),
        };
        let originations = same_tls.map(|p| p.originations.clone()).unwrap_or_default();
        Cluster {
            connections: Arc::new(Semaphore::new(
                config.limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            config,
            endpoints,
            cursor: AtomicUsize::new(0),
            active_requests: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            active_retries: AtomicUsize::new(0),
            upstream,
            stats,
            originations,
        }
    }

    /// How a connection to `endpoint` carrying `alpn` is secured: `None` for plaintext.
    /// Istio's auto mTLS takes mTLS to endpoints with a sidecar when this proxy has an
    /// identity; a DestinationRule's `tls` decides for every endpoint.
    pub fn origination(
        &self,
        mesh: Option<&MeshTls>,
        endpoint: &Endpoint,
        alpn: Alpn,
    ) -> Result<Option<Arc<Origination>>, String> {
        let secured = match &self.config.tls {
            UpstreamTls::Plaintext => false,
            UpstreamTls::AutoMutual(_) => mesh.is_some() && endpoint.mtls_ready,
            UpstreamTls::IstioMutual(_) | UpstreamTls::Originate(_) => true,
        };
        if !secured {
            return Ok(None);
        }
        let cached = &self.originations[alpn.index()];
        if let Some(origination) = cached.get() {
            return Ok(Some(origination.clone()));
        }
        let origination = match (&self.config.tls, mesh) {
            (UpstreamTls::AutoMutual(peer) | UpstreamTls::IstioMutual(peer), Some(mesh)) => mesh
                .originate(&peer.identities, &peer.sni, alpn)
                .map_err(|e| format!("cannot originate mTLS to {}: {e}", self.config.name)),
            (UpstreamTls::Originate(settings), _) => Origination::external(settings, alpn)
                .map_err(|e| format!("cannot originate TLS to {}: {e}", self.config.name)),
            _ => Err(format!(
                "DestinationRule tls ISTIO_MUTUAL for {}: this proxy has no workload certificate",
                self.config.name
            )),
        }?;
        Ok(Some(cached.get_or_init(|| Arc::new(origination)).clone()))
    }

    /// Whether requests go upstream as HTTP/2: by the port's protocol or, when the port
    /// declared none, by the protocol the caller spoke.
    pub fn speaks_h2(&self, downstream_h2: bool) -> bool {
        match self.config.protocol {
            Protocol::Http => false,
            p if p.is_h2() => true,
            _ => downstream_h2,
        }
    }

    /// Takes a place within `maxConnections`, `http1MaxPendingRequests` and
    /// `http2MaxRequests`, or reports overflow as Envoy's circuit breakers do.
    pub async fn admit(self: &Arc<Self>, multiplexed: bool) -> Result<Admission, Overflow> {
        let limits = &self.config.limits;
        if self.active_requests.fetch_add(1, Relaxed) >= limits.max_requests {
            self.active_requests.fetch_sub(1, Relaxed);
            ClusterStats::count(&self.stats.rq_pending_overflow);
            return Err(Overflow);
        }
        let admission = |permit| Admission {
            cluster: self.clone(),
            _connection: permit,
        };
        if multiplexed {
            return Ok(admission(None));
        }
        if let Ok(permit) = self.connections.clone().try_acquire_owned() {
            return Ok(admission(Some(permit)));
        }
        if self.pending.fetch_add(1, Relaxed) >= limits.max_pending_requests {
            self.pending.fetch_sub(1, Relaxed);
            self.active_requests.fetch_sub(1, Relaxed);
            ClusterStats::count(&self.stats.rq_pending_overflow);
            return Err(Overflow);
        }
        let permit = self.connections.clone().acquire_owned().await;
        self.pending.fetch_sub(1, Relaxed);
        match permit {
            Ok(p) => Ok(admission(Some(p))),
            Err(_) => {
                self.active_requests.fetch_sub(1, Relaxed);
                Err(Overflow)
            }
        }
    }

    /// A retry within `maxRetries`, or none.
    pub fn retry_token(self: &Arc<Self>) -> Option<RetryToken> {
        if self.active_retries.fetch_add(1, Relaxed) >= self.config.limits.max_retries {
            self.active_retries.fetch_sub(1, Relaxed);
            return None;
        }
        Some(RetryToken(self.clone()))
    }

    /// Picks an endpoint that is not ejected, avoiding `tried` while another remains.
    /// Passthrough clusters dial the caller's original destination.
    pub fn pick(
        &self,
        hash: Option<u64>,
        tried: &[Arc<Endpoint>],
        original_dst: Option<SocketAddr>,
    ) -> Option<Arc<Endpoint>> {
        if self.config.discovery == Discovery::Passthrough
            || self.config.lb == LbPolicy::Passthrough
        {
            return original_dst.map(|dst| Arc::new(Endpoint::from_socket(dst)));
        }
        let healthy = |e: &Endpoint| !e.is_ejected();
        let untried =
            |e: &Endpoint| healthy(e) && !tried.iter().any(|t| t.authority == e.authority);
        let min_health = self
            .config
            .outlier
            .as_ref()
            .map_or(0, |o| o.min_health_percent);
        if min_health > 0 {
            // Envoy's panic mode: below minHealthPercent every endpoint is used.
            let healthy_count = self.endpoints.iter().filter(|e| healthy(e)).count();
            if healthy_count * 100 < min_health as usize * self.endpoints.len() {
                return lb::pick(&self.config.lb, &self.endpoints, &self.cursor, hash, |_| {
                    true
                })
                .cloned();
            }
        }
        lb::pick(
            &self.config.lb,
            &self.endpoints,
            &self.cursor,
            hash,
            untried,
        )
        .or_else(|| {
            lb::pick(
                &self.config.lb,
                &self.endpoints,
                &self.cursor,
                hash,
                healthy,
            )
        })
        .cloned()
    }

    /// Feeds outlier detection; returns true when the endpoint was ejected.
    pub fn record(&self, endpoint: &Endpoint, outcome: Outcome) -> bool {
        let Some(cfg) = &self.config.outlier else {
            return false;
        };
        endpoint.record(outcome, cfg, || {
            // maxEjectionPercent, but like Envoy always allow ejecting one.
            let ejected = self.endpoints.iter().filter(|e| e.is_ejected()).count();
            ejected == 0
                || (ejected + 1) * 100 <= cfg.max_ejection_percent as usize * self.endpoints.len()
        })
    }

    /// Takes a TCP connection slot within `maxConnections`.
    pub fn tcp_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }
}

//! Envoy's per-cluster stats under Envoy's names, the ones Istio users alert on
//! (`envoy_cluster_upstream_rq_total{cluster_name=…}` and friends). A cluster's counters
//! live as long as a cluster of that name does, across config versions.

use super::Cluster;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Requests sent upstream, each try counted.
    pub rq_total: AtomicU64,
    pub rq_retry: AtomicU64,
    /// Refused by the circuit breaker (`UO`).
    pub rq_pending_overflow: AtomicU64,
    /// The route timeout ran out (`UT`).
    pub rq_timeout: AtomicU64,
    cx_active: AtomicU64,
}

/// Counts an upstream connection as active while it lives.
pub struct ActiveConnection(Arc<ClusterStats>);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.cx_active.fetch_sub(1, Relaxed);
    }
}

impl ClusterStats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn connection(self: &Arc<Self>) -> ActiveConnection {
        self.cx_active.fetch_add(1, Relaxed);
        ActiveConnection(self.clone())
    }
}

/// Prometheus text for every cluster of the snapshot, as Envoy's `/stats/prometheus`
/// writes them with Istio's `cluster_name` tag.
pub fn render(clusters: &BTreeMap<String, Arc<Cluster>>, out: &mut String) {
    type Read = fn(&Cluster) -> u64;
    let families: [(&str, &str, Read); 6] = [
        ("envoy_cluster_upstream_rq_total", "counter", |c| {
            c.stats.rq_total.load(Relaxed)
        }),
        ("envoy_cluster_upstream_rq_retry", "counter", |c| {
            c.stats.rq_retry.load(Relaxed)
        }),
        (
            "envoy_cluster_upstream_rq_pending_overflow",
            "counter",
            |c| c.stats.rq_pending_overflow.load(Relaxed),
        ),
        ("envoy_cluster_upstream_rq_timeout", "counter", |c| {
            c.stats.rq_timeout.load(Relaxed)
        }),
        ("envoy_cluster_upstream_cx_active", "gauge", |c| {
            c.stats.cx_active.load(Relaxed)
        }),
        (
            "envoy_cluster_outlier_detection_ejections_active",
            "gauge",
            |c| c.endpoints.iter().filter(|e| e.is_ejected()).count() as u64,
        ),
    ];
    for (name, kind, read) in families {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (cluster_name, cluster) in clusters {
            let _ = writeln!(
                out,
                "{name}{{cluster_name=\"{}\"}} {}",
                escape(cluster_name),
                read(cluster)
            );
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

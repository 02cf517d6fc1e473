//! The aggregator's scraper: every interval, each proxy's merged metrics (15020
//! `/stats/prometheus`) are read, Istio's standard metrics kept, and each series labelled with
//! its pod, as Istio's Prometheus addon labels them.

pub mod exposition;

use crate::http_client::{self, GetError};
use crate::tsdb::chunk::Sample;
use crate::tsdb::{self, Db};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;

/// Istio's addon scrapes every 15 s.
pub const INTERVAL: Duration = Duration::from_secs(15);
/// Scrapes in flight at once.
const CONCURRENCY: usize = 32;

/// Istio's standard metrics and Weft's route metrics: what the dashboard's graph, charts and
/// route list read.
pub fn kept(name: &str) -> bool {
    matches!(
        name,
        "istio_requests_total"
            | "istio_request_duration_milliseconds_bucket"
            | "istio_request_bytes_bucket"
            | "istio_response_bytes_bucket"
            | "istio_request_messages_total"
            | "istio_response_messages_total"
            | "istio_tcp_sent_bytes_total"
            | "istio_tcp_received_bytes_total"
            | "istio_tcp_connections_opened_total"
            | "istio_tcp_connections_closed_total"
            | "weft_route_requests_total"
            | "weft_route_request_duration_milliseconds_bucket"
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub namespace: String,
    /// Where its merged metrics are (`IP:15020`).
    pub address: SocketAddr,
}

#[derive(Debug, Default)]
pub struct ScrapeStats {
    pub scrapes: AtomicU64,
    pub failures: AtomicU64,
    pub malformed_lines: AtomicU64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Scrapes the targets `targets` names every `interval`, for as long as the task lives.
pub async fn run(
    db: Arc<Db>,
    stats: Arc<ScrapeStats>,
    interval: Duration,
    targets: impl Fn() -> Vec<Target> + Send + 'static,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        scrape_all(&db, &stats, targets()).await;
        db.compact(now_ms());
    }
}

/// One round: every target, at most `CONCURRENCY` at a time.
pub async fn scrape_all(db: &Arc<Db>, stats: &Arc<ScrapeStats>, targets: Vec<Target>) {
    let mut running = JoinSet::new();
    for target in targets {
        while running.len() >= CONCURRENCY {
            running.join_next().await;
        }
        let (db, stats) = (db.clone(), stats.clone());
        running.spawn(async move {
            stats.scrapes.fetch_add(1, Ordering::Relaxed);
            match fetch(target.address).await {
                Ok(text) => {
                    let malformed = store(&db, &target, &text, now_ms());
                    stats
                        .malformed_lines
                        .fetch_add(malformed as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pod = %target.pod, "scrape failed: {e}");
                }
            }
        });
    }
    while running.join_next().await.is_some() {}
}

/// Stores one scrape's kept samples at `t`; returns how many lines were malformed.
pub fn store(db: &Db, target: &Target, text: &str, t: i64) -> usize {
    let parsed = exposition::parse(text, kept);
    let mut appender = db.appender();
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(32);
    for line in &parsed.lines {
        pairs.clear();
        pairs.push(("__name__", line.name));
        pairs.extend(
            line.labels
                .iter()
                .filter(|(n, _)| *n != "pod" && *n != "namespace")
                .map(|(n, v)| (*n, v.as_ref())),
        );
        pairs.push(("pod", &target.pod));
        pairs.push(("namespace", &target.namespace));
        tsdb::sort_pairs(&mut pairs);
        appender.append(&pairs, Sample { t, v: line.value });
    }
    parsed.malformed
}

async fn fetch(address: SocketAddr) -> Result<String, GetError> {
    let base = http::Uri::try_from(format!("http://{address}"))
        .map_err(|_| GetError::Address(address.to_string()))?;
    let body = http_client::get(&base, "/stats/prometheus").await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

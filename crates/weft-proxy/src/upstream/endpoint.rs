//! One upstream endpoint: its address, in-flight count and outlier-detection state.

use super::config::{EndpointConfig, OutlierConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Endpoint {
    /// `10.44.0.7:9080` or `httpbin.org:80`: what the client dials.
    pub authority: String,
    pub socket: Option<SocketAddr>,
    pub labels: BTreeMap<String, String>,
    /// It has a sidecar that takes Istio's mTLS here: auto mTLS uses it.
    pub mtls_ready: bool,
    pub declared_by: String,
    pub active: AtomicUsize,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Milliseconds since [`epoch`] until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
}

/// What one try against an endpoint came to, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Status(u16),
    /// Connect failure, reset or timeout: counted as a gateway error, as Envoy does when
    /// local-origin errors are not split out.
    LocalFailure,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    // At least 1 so that 0 can mean "not ejected".
    (Instant::now()
        .saturating_duration_since(epoch())
        .as_millis() as u64)
        .max(1)
}

impl Endpoint {
    pub fn new(
        address: &str,
        port: u16,
        labels: BTreeMap<String, String>,
        declared_by: String,
    ) -> Endpoint {
        let socket = address
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        let authority = match socket {
            Some(s) => s.to_string(),
            None => format!("{address}:{port}"),
        };
        Endpoint {
            authority,
            socket,
            mtls_ready: false,
            labels,
            declared_by,
            active: AtomicUsize::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
        }
    }

    pub fn from_config(config: &EndpointConfig) -> Endpoint {
        Endpoint {
            mtls_ready: config.mtls_ready,
            ..Endpoint::new(
                &config.address,
                config.port,
                config.labels.clone(),
                config.declared_by.clone(),
            )
        }
    }

    pub fn from_socket(addr: SocketAddr) -> Endpoint {
        Endpoint::new(
            &addr.ip().to_string(),
            addr.port(),
            BTreeMap::new(),
            "original destination".into(),
        )
    }

    /// Ejected endpoints come back once their ejection time has passed.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && now_ms() < until
    }

    /// Records an outcome; returns true when it ejected the endpoint. `may_eject` says whether
    /// the cluster's maxEjectionPercent leaves room.
    pub fn record(
        &self,
        outcome: Outcome,
        cfg: &OutlierConfig,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(code) => (code >= 500, matches!(code, 502..=504)),
            Outcome::LocalFailure => (true, true),
        };
        let bump = |counter: &AtomicU32, hit: bool, threshold: u32| {
            if hit {
                threshold > 0 && counter.fetch_add(1, Relaxed) + 1 >= threshold
            } else {
                counter.store(0, Relaxed);
                false
            }
        };
        let trip_5xx = bump(&self.consecutive_5xx, is_5xx, cfg.consecutive_5xx);
        let trip_gw = bump(
            &self.consecutive_gateway,
            is_gateway,
            cfg.consecutive_gateway,
        );
        if !(trip_5xx || trip_gw) || self.is_ejected() || !may_eject() {
            return false;
        }
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway.store(0, Relaxed);
        // Each ejection lasts baseEjectionTime times the number of times ejected, and ends
        // at the next `interval` sweep after that, as Envoy's detector un-ejects on its timer.
        let times = self.times_ejected.fetch_add(1, Relaxed) + 1;
        let due = now_ms() + cfg.base_ejection_time.as_millis() as u64 * u64::from(times);
        let interval = (cfg.interval.as_millis() as u64).max(1);
        self.ejected_until
            .store(due.div_ceil(interval) * interval, Relaxed);
        true
    }

    pub fn status(&self) -> &'static str {
        if self.is_ejected() {
            "UNHEALTHY"
        } else {
            "HEALTHY"
        }
    }
}

/// Keeps an endpoint's in-flight count for least-request balancing.
pub struct ActiveGuard(std::sync::Arc<Endpoint>);

impl ActiveGuard {
    pub fn new(ep: std::sync::Arc<Endpoint>) -> ActiveGuard {
        ep.active.fetch_add(1, Relaxed);
        ActiveGuard(ep)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

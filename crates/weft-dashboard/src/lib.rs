//! The Weft dashboard, served by the control plane on Kiali's port (20001): the mesh's graph,
//! its services' and workloads' charts, traces and config in one web app, over the JSON API in
//! `docs/dashboard-api.md`. By default its numbers come from a built-in aggregator that scrapes
//! every proxy; `--prometheus URL` reads a real Prometheus instead, and `--tracing-url URL`
//! a real Zipkin or Jaeger.
#![forbid(unsafe_code)]

mod api;
mod assets;
pub mod graph;
pub mod http_client;
pub mod inventory;
pub mod jaeger;
pub mod query;
pub mod scrape;
pub mod source;
pub mod tsdb;
mod yaml_lines;

use source::{MetricsSource, TracingSource};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weft_control::ControlPlane;

/// Kiali's port.
pub const DASHBOARD_PORT: u16 = 20001;
/// Where sidecars serve their merged metrics (Istio's 15020).
pub const STATS_PORT: u16 = 15020;

pub struct DashboardOptions {
    pub listen: SocketAddr,
    /// Read this Prometheus rather than scraping the proxies.
    pub prometheus: Option<http::Uri>,
    /// Where the trace pages read spans.
    pub tracing: TracingSource,
    pub scrape_interval: Duration,
    pub limits: tsdb::Limits,
    /// The port each proxy's merged metrics are on, at its workload's address.
    pub stats_port: u16,
}

impl Default for DashboardOptions {
    fn default() -> DashboardOptions {
        DashboardOptions {
            listen: ([127, 0, 0, 1], DASHBOARD_PORT).into(),
            prometheus: None,
            tracing: TracingSource::Builtin,
            scrape_interval: scrape::INTERVAL,
            limits: tsdb::Limits::default(),
            stats_port: STATS_PORT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot listen on {addr} for the dashboard: {source}{}", if source.kind() == std::io::ErrorKind::AddrInUse { " (another dashboard or Kiali may be running; pass --dashboard ADDR)" } else { "" })]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running dashboard. Dropping it stops it.
pub struct Dashboard {
    pub addr: SocketAddr,
    /// The built-in store (empty when a Prometheus is read).
    pub db: Arc<tsdb::Db>,
    pub scrapes: Arc<scrape::ScrapeStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Dashboard {
    pub async fn start(
        opts: DashboardOptions,
        control: &ControlPlane,
    ) -> Result<Dashboard, DashboardError> {
        let listener =
            TcpListener::bind(opts.listen)
                .await
                .map_err(|source| DashboardError::Bind {
                    addr: opts.listen,
                    source,
                })?;
        let addr = listener.local_addr().expect("bound");
        let db = Arc::new(tsdb::Db::new(opts.limits));
        let scrapes = Arc::new(scrape::ScrapeStats::default());
        let mut tasks = Vec::new();
        let metrics = match opts.prometheus {
            Some(url) => MetricsSource::Prometheus(url),
            None => {
                let state = control.state.clone();
                let port = opts.stats_port;
                tasks.push(tokio::spawn(scrape::run(
                    db.clone(),
                    scrapes.clone(),
                    opts.scrape_interval,
                    move || api::targets(&state, port),
                )));
                MetricsSource::Builtin(db.clone())
            }
        };
        let ctx = Arc::new(api::Context {
            state: control.state.clone(),
            collector: control.collector.clone(),
            tracing: opts.tracing,
            metrics,
            scrape_interval: opts.scrape_interval,
            // Off loopback, the API needs the control plane's admin token.
            token: (!addr.ip().is_loopback()).then(|| control.admin_token.clone()),
        });
        tasks.push(tokio::spawn(api::serve(listener, ctx)));
        Ok(Dashboard {
            addr,
            db,
            scrapes,
            tasks,
        })
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

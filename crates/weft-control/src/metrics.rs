//! The control plane's own metrics on 15014, under istiod's names where istiod has one, in
//! the Prometheus text format istiod serves (counters without `_total`, as istiod's are).

use crate::config::ConfigState;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn readiness(state: &ConfigState) -> (u16, String) {
    match state.problems() {
        (true, problems) if problems.is_empty() => (200, "ready\n".into()),
        (true, problems) => (200, format!("ready, but:\n{}\n", problems.join("\n"))),
        (false, problems) => (503, format!("not ready:\n{}\n", problems.join("\n"))),
    }
}

pub struct Metrics {
    registry: Registry,
    connected: Gauge,
    views: Gauge,
    objects: Gauge,
    broken_files: Gauge,
    pushes: Family<Vec<(&'static str, &'static str)>, Counter>,
    rejects: Counter,
    push_time: Histogram,
    convergence: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let seconds = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let mut m = Metrics {
            registry: Registry::default(),
            connected: Gauge::default(),
            views: Gauge::default(),
            objects: Gauge::default(),
            broken_files: Gauge::default(),
            pushes: Family::default(),
            rejects: Counter::default(),
            push_time: seconds(),
            convergence: seconds(),
        };
        let r = &mut m.registry;
        let build: Family<Vec<(&'static str, &'static str)>, Gauge> = Family::default();
        build
            .get_or_create(&vec![
                ("component", "pilot"),
                ("tag", env!("CARGO_PKG_VERSION")),
            ])
            .set(1);
        r.register("istio_build", "The control plane's build", build);
        r.register("pilot_xds", "Proxies connected", m.connected.clone());
        r.register(
            "weft_control_views",
            "Distinct proxy views (namespace and Sidecar) being kept",
            m.views.clone(),
        );
        r.register(
            "weft_control_config_objects",
            "Objects known: config and announced workloads",
            m.objects.clone(),
        );
        r.register(
            "weft_control_config_files_invalid",
            "Files of the config directory that do not load",
            m.broken_files.clone(),
        );
        r.register(
            "pilot_xds_pushes",
            "Updates broadcast to a view, by the xDS types (cds, eds, lds, rds) Envoy would receive for them",
            m.pushes.clone(),
        );
        r.register(
            "pilot_xds_rejects",
            "Updates proxies rejected",
            m.rejects.clone(),
        );
        r.register(
            "pilot_xds_push_time_seconds",
            "Time to compute a change's updates",
            m.push_time.clone(),
        );
        r.register(
            "pilot_proxy_convergence_time_seconds",
            "Time from sending an update to its acknowledgement",
            m.convergence.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn connected(&self, n: usize) {
        self.connected.set(n as i64);
    }

    pub fn views(&self, n: usize) {
        self.views.set(n as i64);
    }

    pub fn objects(&self, n: usize) {
        self.objects.set(n as i64);
    }

    pub fn broken_files(&self, n: usize) {
        self.broken_files.set(n as i64);
    }

    pub fn pushed(&self, types: &[&'static str], views: usize, took: Duration) {
        for t in types {
            self.pushes
                .get_or_create(&vec![("type", *t)])
                .inc_by(views as u64);
        }
        self.push_time.observe(took.as_secs_f64());
    }

    pub fn rejected(&self) {
        self.rejects.inc();
    }

    pub fn converged(&self, took: Duration) {
        self.convergence.observe(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text.lines()
            .filter(|l| *l != "# EOF")
            .map(|l| {
                let (name, rest) = l.split_at(l.find(['{', ' ']).unwrap_or(l.len()));
                let name = name.strip_suffix("_total").unwrap_or(name);
                format!("{name}{rest}\n")
            })
            .collect()
    }
}

/// Serves `/metrics` and `/ready` until the task is dropped. `/ready` answers 503 while a
/// config file's objects are missing (it broke before it ever loaded), and names the file.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, state: Arc<ConfigState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                let state = state.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (200, metrics.render()),
                        "/ready" => readiness(&state),
                        _ => (404, "try /metrics or /ready\n".to_string()),
                    };
                    Response::builder()
                        .status(status)
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(body)))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

//! The admin port (127.0.0.1:15000: `/config_dump`, `/ready`, `/logging`,
//! `/quitquitquit`, `/stats/prometheus`), the health port (15021: `/healthz/ready`), the
//! merged stats port (15020: `/stats/prometheus` with the process's metrics,
//! `/healthz/ready`) and Envoy's stats port (15090: `/stats/prometheus`).

use crate::config::ConfigStore;
use crate::drain::Drain;
use crate::model::route::WeightedClusters;
use crate::model::{GatewayPort, RouteConfig, ServerTls, Serves, Snapshot};
use crate::telemetry::metrics::Metrics;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use weft_api::Redacted;

/// Sets the log filter (`/logging?level=debug`); the binary owns the subscriber.
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where the app serves its own metrics, for 15020 to merge (Istio's metrics merging, from
/// the pod's `prometheus.io/port` and `prometheus.io/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    pub addr: std::net::SocketAddr,
    pub path: String,
}

/// The largest app metrics page merged.
const APP_METRICS_LIMIT: usize = 10 << 20;
const APP_METRICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Admin {
    pub config: Arc<ConfigStore>,
    pub app_metrics: Option<AppMetrics>,
    pub certificates: Option<crate::identity::Certificates>,
    pub quit: Arc<Notify>,
    pub set_log_level: Option<SetLogLevel>,
    pub metrics: Arc<Metrics>,
    pub drain: Arc<Drain>,
}

/// Which of the proxy's ports a listener is: each serves a subset of the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Admin,
    Health,
    Stats,
    EnvoyStats,
}

impl Admin {
    /// Istio's and Envoy's stats, as Envoy serves them on 15090; `merged` adds the proxy
    /// process's own metrics and the app's, as Istio's agent merges them on 15020.
    async fn prometheus(&self, merged: bool) -> String {
        let mut out = self.metrics.render();
        crate::upstream::stats::render(&self.config.current().clusters, &mut out);
        if merged {
            crate::telemetry::process::render(&mut out);
            if let Some(app) = &self.app_metrics {
                match scrape_app(app).await {
                    Ok(text) => {
                        out.push_str(&text);
                        if !text.ends_with('\n') {
                            out.push('\n');
                        }
                    }
                    // Istio's agent serves its own metrics when the app's cannot be read.
                    Err(e) => tracing::debug!("app metrics at {}{}: {e}", app.addr, app.path),
                }
            }
        }
        out
    }
}

async fn scrape_app(app: &AppMetrics) -> Result<String, String> {
    let request = Request::get(&app.path)
        .header(http::header::HOST, app.addr.to_string())
        .header(http::header::ACCEPT, "text/plain; version=0.0.4")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let host = app.addr.ip().to_string();
    let response = crate::http::oneshot::send(
        &host,
        app.addr.port(),
        None,
        request,
        APP_METRICS_LIMIT,
        APP_METRICS_TIMEOUT,
    )
    .await?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    String::from_utf8(response.into_body().to_vec()).map_err(|_| "not UTF-8 text".into())
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, port: Port) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            // `/quitquitquit` quits once its answer has gone out and the connection closed,
            // so the caller always reads its 200.
            let quit_after = Arc::new(AtomicBool::new(false));
            let (on_quit, routed) = (quit_after.clone(), admin.clone());
            let service = service_fn(move |req| {
                let (admin, on_quit) = (routed.clone(), on_quit.clone());
                async move { Ok::<_, Infallible>(route(&admin, req, port, &on_quit).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if quit_after.load(Ordering::Relaxed) {
                admin.quit.notify_waiters();
                admin.quit.notify_one();
            }
        });
    }
}

async fn route(
    admin: &Admin,
    req: Request<Incoming>,
    port: Port,
    quit_after: &AtomicBool,
) -> Response<Full<Bytes>> {
    // Draining fails readiness, as Envoy's does, so the platform stops sending.
    let (ready, why, state) = if admin.drain.is_draining() {
        (false, "draining", "DRAINING")
    } else if admin.config.is_ready() {
        (true, "ok", "LIVE")
    } else {
        (
            false,
            "waiting for the first configuration",
            "PRE_INITIALIZING",
        )
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    match (req.method(), req.uri().path(), port) {
        (&Method::GET, "/healthz/ready", _) => text(status, why),
        (&Method::GET, "/stats/prometheus", Port::Admin | Port::Stats | Port::EnvoyStats) => {
            Response::builder()
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(admin.prometheus(port == Port::Stats).await.into()))
                .expect("valid response")
        }
        (_, _, Port::Health) => text(StatusCode::NOT_FOUND, "not found"),
        (_, _, Port::Stats | Port::EnvoyStats) => text(
            StatusCode::NOT_FOUND,
            "stats endpoints: GET /stats/prometheus, GET /healthz/ready",
        ),
        (&Method::GET, "/ready", _) => text(status, state),
        (&Method::GET, "/config_dump", _) => {
            let mut dump = config_dump(&admin.config);
            if let Some(certificates) = &admin.certificates {
                dump["secrets"] = certificates.dump();
            }
            let body = serde_json::to_vec_pretty(&dump).unwrap_or_default();
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(body.into()))
                .expect("valid response")
        }
        (&Method::POST, "/logging", _) => {
            let level = req
                .uri()
                .query()
                .and_then(|q| crate::model::matcher::query_value(q, "level"))
                .unwrap_or("");
            match (&admin.set_log_level, level) {
                (_, "") => text(StatusCode::BAD_REQUEST, "usage: POST /logging?level=debug"),
                (Some(set), level) => match set(level) {
                    Ok(()) => text(StatusCode::OK, &format!("log level set to {level}")),
                    Err(e) => text(StatusCode::BAD_REQUEST, &e),
                },
                (None, _) => text(StatusCode::NOT_IMPLEMENTED, "log level is fixed in this process"),
            }
        }
        // Envoy's, which Istio's preStop hook calls: the drain SIGTERM would start, now;
        // the process goes on until its signal.
        (&Method::POST, "/drain_listeners", _) => {
            let started = admin.drain.start();
            text(
                StatusCode::OK,
                if started { "OK: draining" } else { "OK: already draining" },
            )
        }
        (&Method::POST, "/quitquitquit", _) => {
            quit_after.store(true, Ordering::Relaxed);
            let mut ok = text(StatusCode::OK, "OK");
            ok.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            ok
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: GET /config_dump, GET /ready, GET /stats/prometheus, POST /logging?level=LEVEL, POST /drain_listeners, POST /quitquitquit",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .expect("valid response")
}

/// The compiled state, shaped for `weft proxy-config` and humans.
pub fn config_dump(store: &ConfigStore) -> Value {
    let snapshot: Arc<Snapshot> = store.current();
    let status = store.status();
    let clusters: Vec<Value> = snapshot
        .clusters
        .values()
        .map(|c| {
            json!({
                "name": c.config.name,
                "service": c.config.service,
                "port": c.config.port,
                "subset": c.config.subset,
                "protocol": c.config.protocol,
                "lb": c.config.lb,
                "limits": c.config.limits,
                "outlierDetection": c.config.outlier,
                "destinationRules": c.config.destination_rules,
                "unusable": c.config.unusable,
                "tls": c.config.tls,
                "endpoints": c.endpoints.iter().map(|e| json!({
                    "address": e.authority,
                    "status": e.status(),
                    "mtlsReady": e.mtls_ready,
                    "labels": e.labels,
                    "declaredBy": e.declared_by,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "version": snapshot.version,
        "rejected": status.rejected,
        "lastError": status.last_error,
        "workload": snapshot.workload,
        "outboundTrafficPolicy": snapshot.outbound_policy,
        "inboundMtls": snapshot.inbound_mtls,
        "services": snapshot.registry.services,
        "clusters": clusters,
        "routes": route_tables(&snapshot.http),
        "gatewayPorts": gateway_ports(&snapshot.gateway_ports),
        "gatewayListeners": status.gateway,
        "resources": snapshot.resources.iter().map(Redacted).collect::<Vec<_>>(),
    })
}

fn route_tables(tables: &HashMap<u16, RouteConfig>) -> Vec<Value> {
    let mut ports: Vec<_> = tables.values().collect();
    ports.sort_by_key(|r| r.port);
    ports
        .iter()
        .map(|table| route_table(&table.port.to_string(), table))
        .collect()
}

fn route_table(name: &str, table: &RouteConfig) -> Value {
    json!({
        "name": name,
        "virtualHosts": table.vhosts.iter().map(|v| json!({
            "name": v.name,
            "domains": v.domains,
            "virtualService": v.virtual_service,
            "requireTls": v.require_tls,
            "routes": v.routes.iter().map(|r| json!({
                "name": r.name,
                "matches": r.matches.len(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Each gateway port's servers: their TLS (the credential's origin, never its bytes, or
/// why it is unavailable) and what follows it.
fn gateway_ports(ports: &HashMap<u16, GatewayPort>) -> Vec<Value> {
    let mut numbers: Vec<&u16> = ports.keys().collect();
    numbers.sort();
    let clusters = |c: Option<&WeightedClusters>| {
        c.map(|c| {
            c.clusters
                .iter()
                .map(|w| w.cluster.config.name.clone())
                .collect::<Vec<_>>()
        })
    };
    numbers
        .into_iter()
        .map(|&port| match &ports[&port] {
            GatewayPort::Http(table) => json!({
                "port": port,
                "protocol": "HTTP",
                "routes": route_table(&format!("http.{port}"), table),
            }),
            GatewayPort::Tcp(route) => json!({
                "port": port,
                "protocol": "TCP",
                "clusters": clusters(route.as_ref()),
            }),
            GatewayPort::Tls(servers) => json!({
                "port": port,
                "protocol": "TLS",
                "servers": servers.iter().map(|s| {
                    let tls = match &s.tls {
                        ServerTls::Passthrough => json!({"mode": "PASSTHROUGH"}),
                        ServerTls::Mesh => json!({"mode": "ISTIO_MUTUAL"}),
                        ServerTls::Terminate { mode, credential, .. } => json!({"mode": mode, "credential": credential}),
                        ServerTls::Unavailable(why) => json!({"error": why}),
                    };
                    let serves = match &s.serves {
                        Serves::Http(table) => json!({"routes": route_table(&s.name, table)}),
                        Serves::Tcp(route) => json!({"clusters": clusters(route.as_ref())}),
                        Serves::Tls(routes) => json!({"sniRoutes": routes.iter().map(|r| json!({
                            "sniHosts": r.sni_hosts,
                            "clusters": clusters(Some(&r.clusters)),
                        })).collect::<Vec<_>>()}),
                    };
                    json!({"name": s.name, "gateway": s.gateway, "hosts": s.hosts, "tls": tls, "serves": serves})
                }).collect::<Vec<_>>(),
            }),
        })
        .collect()
}

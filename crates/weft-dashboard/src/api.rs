//! The dashboard's HTTP server: the embedded web app, Kiali's graph API and Weft's own JSON
//! endpoints (`docs/dashboard-api.md`), behind the admin token when not on loopback.

use crate::assets;
use crate::graph::{self, GraphType};
use crate::inventory;
use crate::scrape::{self, Target};
use crate::source::{MetricsSource, TracingSource};
use crate::yaml_lines;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_api::analyze::{self, Input, Level};
use weft_api::{Redacted, Resource};
use weft_control::collector::{self, Collector};
use weft_control::config::ConfigState;
use weft_discovery::credentials::Token;

pub struct Context {
    pub state: Arc<ConfigState>,
    pub collector: Arc<Collector>,
    pub tracing: TracingSource,
    pub metrics: MetricsSource,
    pub scrape_interval: Duration,
    /// `None`: the API is open (loopback only).
    pub token: Option<Token>,
}

type Answer = Response<Full<Bytes>>;

/// Every connected proxy's merged metrics, at its workload's address and the port it
/// announced (`port` if it announced none).
pub fn targets(state: &ConfigState, port: u16) -> Vec<Target> {
    let mesh = state.mesh();
    mesh.proxies()
        .filter_map(|(id, p)| {
            let ip = p.hello.address.parse().ok()?;
            Some(Target {
                pod: id.name.clone(),
                namespace: id.namespace.clone(),
                address: SocketAddr::new(
                    ip,
                    u16::try_from(p.hello.stats_port)
                        .ok()
                        .filter(|p| *p != 0)
                        .unwrap_or(port),
                ),
            })
        })
        .collect()
}

pub async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&ctx, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(ctx: &Context, req: Request<Incoming>) -> Answer {
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard's API is read-only",
            "change the mesh with weft apply",
        );
    }
    let path = req.uri().path().to_string();
    if !path.starts_with("/api/") {
        return assets::get(&path);
    }
    if let Some(token) = &ctx.token {
        if !authorized(token, req.headers()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "the dashboard needs the control plane's admin token off loopback",
                "send it as Authorization: Bearer TOKEN or the weft-token cookie (the page asks for it); weft control keeps it in .weft/admin.token",
            );
        }
    }
    let params = params(req.uri().query());
    let param = |k: &str| params.get(k).filter(|v| !v.is_empty()).map(String::as_str);
    match path.as_str() {
        "/api/namespaces" => json_answer(&namespaces(ctx)),
        "/api/namespaces/graph" => graph(ctx, &param).await,
        "/api/weft/status" => json_answer(&status(ctx)),
        "/api/weft/proxies" => json_answer(&proxies(ctx)),
        "/api/weft/config" => json_answer(&config(ctx)),
        "/api/weft/services" | "/api/weft/workloads" => {
            let config = config_resources(ctx);
            let proxies = ctx.state.mesh().proxy_statuses();
            let at = scrape::now_ms();
            let ns = param("namespace");
            let listed = if path == "/api/weft/services" {
                inventory::services(&ctx.metrics, &config, &proxies, ns, at).await
            } else {
                inventory::workloads(&ctx.metrics, &config, &proxies, ns, at).await
            };
            from_source(listed)
        }
        "/api/weft/routes" => {
            let config = config_resources(ctx);
            let at = scrape::now_ms();
            from_source(inventory::routes(&ctx.metrics, &config, param("namespace"), at).await)
        }
        "/api/weft/metrics" => charts(ctx, &param).await,
        p if p.starts_with("/api/zipkin/api/v2/") => {
            let api = &p["/api/zipkin".len()..];
            let query = req.uri().query();
            match &ctx.tracing {
                TracingSource::Builtin => collector::query(&ctx.collector, api, query),
                TracingSource::Zipkin(base) => zipkin(base, api, query).await,
                TracingSource::Jaeger(base) => match crate::jaeger::query(base, api, query).await {
                    Ok(answer) => json_answer(&answer),
                    Err(e) => error(
                        StatusCode::BAD_GATEWAY,
                        &format!("asking the Jaeger at {base}: {e}"),
                        "check the address given with --tracing-url (Jaeger's query port, 16686, with its base path)",
                    ),
                },
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no endpoint {path}"),
            "docs/dashboard-api.md lists the endpoints",
        ),
    }
}

fn authorized(token: &Token, headers: &http::HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| token.authorizes(h));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("weft-token="))
        .any(|t| token.authorizes(&format!("Bearer {t}")));
    bearer || cookie
}

pub(crate) fn params(query: Option<&str>) -> HashMap<String, String> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            };
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// `60`, `60s`, `10m`, `1h` → seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    n.checked_mul(factor).filter(|d| (1..=86_400).contains(d))
}

async fn graph<'a>(ctx: &Context, param: &impl Fn(&str) -> Option<&'a str>) -> Answer {
    let graph_type = match param("graphType").map(GraphType::parse) {
        None => GraphType::VersionedApp,
        Some(Some(t)) => t,
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "graphType must be app, versionedApp, workload or service",
                "as Kiali's graph API takes it",
            )
        }
    };
    let duration_s = match param("duration").map(parse_duration) {
        None => 60,
        Some(Some(d)) => d,
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "duration must be seconds (600) or 30s, 10m, 1h, up to a day",
                "the built-in store keeps the last hour",
            )
        }
    };
    let namespaces: BTreeSet<String> = param("namespaces")
        .map(|n| {
            n.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let request = graph::Request {
        namespaces,
        graph_type,
        duration_s,
        at: scrape::now_ms(),
    };
    from_source(graph::build(&ctx.metrics, &config_resources(ctx), &request).await)
}

async fn charts<'a>(ctx: &Context, param: &impl Fn(&str) -> Option<&'a str>) -> Answer {
    let kind = match param("kind") {
        Some("service") => inventory::Kind::Service,
        Some("workload") => inventory::Kind::Workload,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "kind must be service or workload",
                "/api/weft/metrics?kind=service&namespace=default&name=reviews",
            )
        }
    };
    let (Some(namespace), Some(name)) = (param("namespace"), param("name")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "namespace and name are required",
            "/api/weft/metrics?kind=service&namespace=default&name=reviews",
        );
    };
    let inbound = match param("direction") {
        None | Some("inbound") => true,
        Some("outbound") => false,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "direction must be inbound or outbound",
                "inbound splits by source workload, outbound by destination service",
            )
        }
    };
    let (Some(duration_s), Some(step_s)) = (
        param("duration").map_or(Some(600), parse_duration),
        param("step").map_or(Some(15), parse_duration),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "duration and step must be seconds (600) or 30s, 10m, 1h",
            "at most 500 steps are answered",
        );
    };
    let req = inventory::ChartsRequest {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        inbound,
        duration_s,
        step_s,
        at: scrape::now_ms(),
    };
    from_source(inventory::charts(&ctx.metrics, &req).await)
}

/// Zipkin's query API, passed through to the Zipkin at `base`.
async fn zipkin(base: &http::Uri, api: &str, query: Option<&str>) -> Answer {
    let path = match query {
        Some(q) => format!("{api}?{q}"),
        None => api.to_string(),
    };
    match crate::http_client::get(base, &path).await {
        Ok(body) => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(body))
            .expect("valid response"),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &format!("asking the Zipkin at {base}: {e}"),
            "check the address given with --tracing-url",
        ),
    }
}

fn from_source(answer: Result<Value, crate::source::SourceError>) -> Answer {
    match answer {
        Ok(v) => json_answer(&v),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &e.to_string(),
            "check that the Prometheus given with --prometheus is up",
        ),
    }
}

fn config_resources(ctx: &Context) -> Vec<Arc<Resource>> {
    ctx.state
        .mesh()
        .config_objects()
        .map(|(_, o)| o.resource.clone())
        .collect()
}

fn namespaces(ctx: &Context) -> Value {
    let mesh = ctx.state.mesh();
    let mut names: BTreeSet<String> = mesh
        .objects()
        .iter()
        .filter_map(|(_, o)| o.resource.metadata.namespace.clone())
        .collect();
    names.extend(mesh.proxies().map(|(id, _)| id.namespace.clone()));
    names.into_iter().map(|n| json!({ "name": n })).collect()
}

fn status(ctx: &Context) -> Value {
    let metrics = match &ctx.metrics {
        MetricsSource::Builtin(db) => {
            let stats = db.stats();
            json!({
                "source": "builtin",
                "series": stats.series,
                "samples": stats.samples,
                "bytes": stats.bytes,
                "refusedSeries": stats.refused_series,
                "scrapeInterval": ctx.scrape_interval.as_secs(),
                "retention": db.limits().retention.as_secs(),
            })
        }
        other => json!({ "source": other.name() }),
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "metrics": metrics,
        "tracing": {"source": ctx.tracing.name(), "provider": ctx.tracing.provider()},
    })
}

fn proxies(ctx: &Context) -> Value {
    let statuses = ctx.state.mesh().proxy_statuses();
    statuses
        .iter()
        .map(|p| {
            let hello = p.identity.clone().unwrap_or_default();
            let nacked = !p.nacked_version.is_empty() && p.nacked_version == p.sent_version;
            json!({
                "name": hello.name,
                "namespace": hello.namespace,
                "workload": if hello.workload_name.is_empty() { &hello.name } else { &hello.workload_name },
                "address": hello.address,
                "version": hello.proxy_version,
                "sync": if nacked { "NACKED" } else { p.sync_state() },
                "sent": p.sent_version,
                "acked": p.acked_version,
                "nacked": p.nacked_version,
                "nackReason": p.nack_reason,
                "connectedSeconds": p.connected_seconds,
            })
        })
        .collect()
}

/// Every applied resource with the analyzer's messages about it, judged together with
/// everything the control plane knows (announced workloads included).
fn config(ctx: &Context) -> Value {
    let (config, all): (Vec<Arc<Resource>>, Vec<Resource>) = {
        let mesh = ctx.state.mesh();
        (
            mesh.config_objects()
                .map(|(_, o)| o.resource.clone())
                .collect(),
            mesh.objects()
                .iter()
                .map(|(_, o)| o.resource.as_ref().clone())
                .collect(),
        )
    };
    // Validation's warnings about what is in force, as `weft apply` printed them (the
    // analyzers turn them into messages; errors never got in).
    let diagnostics = config
        .iter()
        .flat_map(|r| weft_api::load::validation_diagnostics(r))
        .collect();
    let messages = analyze::analyze(&Input {
        resources: all,
        diagnostics,
        ..Default::default()
    });
    config
        .iter()
        .map(|r| {
            let name = analyze::ResourceName::of(r);
            let yaml = serde_norway::to_string(&Redacted(r)).unwrap_or_default();
            let about: Vec<Value> = messages
                .iter()
                .filter(|m| m.resource.as_ref() == Some(&name))
                .map(|m| {
                    json!({
                        "code": m.code(),
                        "level": match m.level() { Level::Error => "Error", Level::Warning => "Warning", Level::Info => "Info" },
                        "message": m.text,
                        "path": m.path,
                        "line": m.path.as_deref().and_then(|p| yaml_lines::line_of(&yaml, p)),
                    })
                })
                .collect();
            json!({
                "kind": r.kind.name(),
                "apiVersion": r.api_version,
                "namespace": name.namespace,
                "name": r.metadata.name,
                "yaml": yaml,
                "messages": about,
            })
        })
        .collect()
}

fn json_answer(value: &impl serde::Serialize) -> Answer {
    let body = serde_json::to_vec(value).expect("serializable");
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn error(status: StatusCode, message: &str, hint: &str) -> Answer {
    let mut answer = json_answer(&json!({ "error": message, "hint": hint }));
    *answer.status_mut() = status;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_as_a_bearer_or_a_cookie() {
        let token = Token::generate().unwrap();
        let with = |name: header::HeaderName, value: String| {
            let mut h = http::HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            h
        };
        let t = token.as_str();
        assert!(authorized(
            &token,
            &with(header::AUTHORIZATION, format!("Bearer {t}"))
        ));
        assert!(authorized(
            &token,
            &with(header::COOKIE, format!("a=b; weft-token={t}"))
        ));
        assert!(!authorized(
            &token,
            &with(header::COOKIE, "weft-token=nope".into())
        ));
        assert!(!authorized(
            &token,
            &with(header::AUTHORIZATION, t.to_string())
        ));
        assert!(!authorized(&token, &http::HeaderMap::new()));
    }

    #[test]
    fn durations_read_as_kiali_and_prometheus_write_them() {
        assert_eq!(parse_duration("600"), Some(600));
        assert_eq!(parse_duration("60s"), Some(60));
        assert_eq!(parse_duration("10m"), Some(600));
        assert_eq!(parse_duration("1h"), Some(3600));
        for bad in ["", "0", "1d", "m", "-5", "99999999999999999999h", "2h30m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}

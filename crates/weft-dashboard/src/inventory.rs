//! The services, workloads and routes lists (`/api/weft/services`, `/workloads`, `/routes`)
//! and charts (`/metrics`): what the mesh holds, with the figures and charts of Istio's
//! Grafana service and workload dashboards, read from the same metrics as the graph; routes
//! from the proxies' `weft_route_*`.

use crate::query::{Group, Query};
use crate::source::{MetricsSource, SourceError};
use crate::tsdb::Matcher;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use weft_api::{Resource, Spec};
use weft_discovery::admin::ProxyStatus;

/// The window the lists' figures are computed over.
const WINDOW_S: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Service,
    Workload,
}

/// What the metrics call a service or workload, as destination and as source.
fn labels(kind: Kind) -> (&'static str, &'static str, &'static str, &'static str) {
    match kind {
        Kind::Service => (
            "destination_service_name",
            "destination_service_namespace",
            "source_canonical_service",
            "source_workload_namespace",
        ),
        Kind::Workload => (
            "destination_workload",
            "destination_workload_namespace",
            "source_workload",
            "source_workload_namespace",
        ),
    }
}

/// Requests per second, of them not 5xx, and the latency quantiles.
type Figures = (f64, f64, Vec<(String, f64)>);

/// Which metrics to read and how to group them.
struct Grouping {
    requests: &'static str,
    /// The duration histogram's name, without `_bucket`.
    duration: &'static str,
    matchers: Vec<Matcher>,
    by: &'static [&'static str],
    /// `by` and `response_code`.
    by_code: &'static [&'static str],
}

/// Requests per second, success rate and p50/p95/p99 over `WINDOW_S`, keyed by the values
/// of `by`.
async fn figures(
    source: &MetricsSource,
    grouping: Grouping,
    at: i64,
) -> Result<BTreeMap<Vec<String>, Value>, SourceError> {
    let Grouping {
        requests,
        duration,
        matchers,
        by,
        by_code,
    } = grouping;
    let key = |g: &Group| -> Vec<String> {
        by.iter()
            .map(|l| g.get(*l).cloned().unwrap_or_default())
            .collect()
    };
    let mut out: BTreeMap<Vec<String>, Figures> = BTreeMap::new();
    let rates = Query::RateSum {
        metric: requests,
        matchers: matchers.clone(),
        by: by_code,
        window_s: WINDOW_S,
    };
    for (g, r) in source.instant(&rates, at).await? {
        let entry = out.entry(key(&g)).or_default();
        entry.0 += r;
        if !g.get("response_code").is_some_and(|c| c.starts_with('5')) {
            entry.1 += r;
        }
    }
    for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        let latency = Query::Quantile {
            q,
            metric: duration,
            matchers: matchers.clone(),
            by,
            window_s: WINDOW_S,
        };
        for (g, v) in source.instant(&latency, at).await? {
            out.entry(key(&g)).or_default().2.push((name.into(), v));
        }
    }
    Ok(out
        .into_iter()
        .map(|(k, (rps, ok, quantiles))| {
            let mut v = json!({
                "rps": round(rps),
                "successRate": (rps > 0.0).then(|| round(100.0 * ok / rps)),
            });
            for (name, q) in quantiles {
                v[name] = round(q).into();
            }
            (k, v)
        })
        .collect())
}

/// What each service or workload received, as its destination sidecars report it, keyed by
/// [namespace, name].
async fn received(
    source: &MetricsSource,
    kind: Kind,
    at: i64,
) -> Result<BTreeMap<Vec<String>, Value>, SourceError> {
    const SERVICE: &[&str] = &["destination_service_namespace", "destination_service_name"];
    const SERVICE_CODES: &[&str] = &[
        "destination_service_namespace",
        "destination_service_name",
        "response_code",
    ];
    const WORKLOAD: &[&str] = &["destination_workload_namespace", "destination_workload"];
    const WORKLOAD_CODES: &[&str] = &[
        "destination_workload_namespace",
        "destination_workload",
        "response_code",
    ];
    let (by, by_code) = match kind {
        Kind::Service => (SERVICE, SERVICE_CODES),
        Kind::Workload => (WORKLOAD, WORKLOAD_CODES),
    };
    let grouping = Grouping {
        requests: "istio_requests_total",
        duration: "istio_request_duration_milliseconds",
        matchers: vec![Matcher::equal("reporter", "destination")],
        by,
        by_code,
    };
    figures(source, grouping, at).await
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn workload_of(p: &ProxyStatus) -> (String, String) {
    let h = p.identity.clone().unwrap_or_default();
    let name = if h.workload_name.is_empty() {
        h.name
    } else {
        h.workload_name
    };
    (h.namespace, name)
}

pub async fn services(
    source: &MetricsSource,
    config: &[std::sync::Arc<Resource>],
    proxies: &[ProxyStatus],
    namespace: Option<&str>,
    at: i64,
) -> Result<Value, SourceError> {
    let figures = received(source, Kind::Service, at).await?;
    let mut out = Vec::new();
    for r in config {
        let Spec::Service(svc) = &r.spec else {
            continue;
        };
        let ns = r
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        if namespace.is_some_and(|n| n != ns) {
            continue;
        }
        let workloads: BTreeSet<String> = proxies
            .iter()
            .filter(|p| {
                let h = p.identity.as_ref();
                h.is_some_and(|h| {
                    h.namespace == ns
                        && selects(&svc.selector, &h.labels.clone().into_iter().collect())
                })
            })
            .map(|p| workload_of(p).1)
            .collect();
        let mut v = json!({
            "namespace": ns,
            "name": r.metadata.name,
            "app": svc.selector.get("app"),
            "workloads": workloads,
        });
        merge(
            &mut v,
            figures.get(&[ns.clone(), r.metadata.name.clone()][..]),
        );
        out.push(v);
    }
    Ok(out.into())
}

pub async fn workloads(
    source: &MetricsSource,
    config: &[std::sync::Arc<Resource>],
    proxies: &[ProxyStatus],
    namespace: Option<&str>,
    at: i64,
) -> Result<Value, SourceError> {
    let figures = received(source, Kind::Workload, at).await?;
    let mut by_workload: BTreeMap<(String, String), Vec<&ProxyStatus>> = BTreeMap::new();
    for p in proxies {
        by_workload.entry(workload_of(p)).or_default().push(p);
    }
    let mut out = Vec::new();
    for ((ns, name), pods) in by_workload {
        if namespace.is_some_and(|n| n != ns) {
            continue;
        }
        let labels: BTreeMap<String, String> = pods[0]
            .identity
            .as_ref()
            .map(|h| h.labels.clone().into_iter().collect())
            .unwrap_or_default();
        let services: Vec<&str> = config
            .iter()
            .filter(|r| r.metadata.namespace.as_deref().unwrap_or("default") == ns)
            .filter(|r| matches!(&r.spec, Spec::Service(s) if selects(&s.selector, &labels)))
            .map(|r| r.metadata.name.as_str())
            .collect();
        let pods: Vec<Value> = pods
            .iter()
            .map(|p| {
                let h = p.identity.clone().unwrap_or_default();
                json!({
                    "name": h.name,
                    "address": h.address,
                    // Connected and holding the config it was sent.
                    "ready": p.sync_state() == "SYNCED",
                    "proxy": format!("{}.{}", h.name, h.namespace),
                    "sync": p.sync_state(),
                })
            })
            .collect();
        let mut v = json!({
            "namespace": ns,
            "name": name,
            "app": labels.get("app"),
            "version": labels.get("version"),
            "services": services,
            "pods": pods,
        });
        merge(&mut v, figures.get(&[ns.clone(), name.clone()][..]));
        out.push(v);
    }
    Ok(out.into())
}

/// Each VirtualService `http[]` entry and service default route, with what it answered as
/// the calling sidecars and gateways report it: the entries the config declares for its
/// hosts, and every route that saw traffic in the window.
pub async fn routes(
    source: &MetricsSource,
    config: &[std::sync::Arc<Resource>],
    namespace: Option<&str>,
    at: i64,
) -> Result<Value, SourceError> {
    const ROUTE: &[&str] = &[
        "virtual_service_namespace",
        "virtual_service_name",
        "route",
        "destination_service",
    ];
    const ROUTE_CODES: &[&str] = &[
        "virtual_service_namespace",
        "virtual_service_name",
        "route",
        "destination_service",
        "response_code",
    ];
    let grouping = Grouping {
        requests: "weft_route_requests_total",
        duration: "weft_route_request_duration_milliseconds",
        matchers: vec![Matcher::equal("reporter", "source")],
        by: ROUTE,
        by_code: ROUTE_CODES,
    };
    let mut figures = figures(source, grouping, at).await?;
    // Declared routes of hosts a sidecar can route (a wildcard host's routes are counted
    // under each service it covers, so only traffic lists them).
    for r in config {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let ns = r.metadata.namespace.as_deref().unwrap_or("default");
        for host in vs.hosts.iter().filter(|h| !h.contains('*')) {
            for (i, h) in vs.http.iter().enumerate() {
                let route = h.name.clone().unwrap_or_else(|| format!("http[{i}]"));
                let key = vec![
                    ns.to_string(),
                    r.metadata.name.clone(),
                    route,
                    weft_api::host::fqdn(host, ns),
                ];
                figures.entry(key).or_insert_with(|| json!({}));
            }
        }
    }
    let mut out = Vec::new();
    for (key, f) in figures {
        let [vs_ns, vs_name, route, host] = &key[..] else {
            continue;
        };
        // A default route belongs to its service's namespace.
        let ns = match vs_ns.as_str() {
            "" => host.split('.').nth(1).unwrap_or_default(),
            ns => ns,
        };
        if namespace.is_some_and(|n| n != ns) {
            continue;
        }
        let mut v = json!({
            "namespace": ns,
            "virtualService": (!vs_name.is_empty()).then_some(vs_name),
            "route": route,
            "host": host,
        });
        merge(&mut v, Some(&f));
        out.push(v);
    }
    Ok(out.into())
}

fn merge(v: &mut Value, figures: Option<&Value>) {
    if let (Some(obj), Some(Value::Object(f))) = (v.as_object_mut(), figures) {
        obj.extend(f.clone());
    }
}

pub struct ChartsRequest {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub inbound: bool,
    pub duration_s: u64,
    pub step_s: u64,
    pub at: i64,
}

/// Istio's service and workload dashboards' panels over time.
pub async fn charts(source: &MetricsSource, req: &ChartsRequest) -> Result<Value, SourceError> {
    const BY_SOURCE: &[&str] = &["source_workload", "source_workload_namespace"];
    const BY_SOURCE_CODE: &[&str] = &[
        "source_workload",
        "source_workload_namespace",
        "response_code",
    ];
    const BY_DESTINATION: &[&str] = &["destination_service"];
    const BY_DESTINATION_CODE: &[&str] = &["destination_service", "response_code"];
    let (dst_name, dst_ns, src_name, src_ns) = labels(req.kind);
    let (matchers, split, split_code) = if req.inbound {
        (
            vec![
                Matcher::equal("reporter", "destination"),
                Matcher::equal(dst_name, &req.name),
                Matcher::equal(dst_ns, &req.namespace),
            ],
            BY_SOURCE,
            BY_SOURCE_CODE,
        )
    } else {
        (
            vec![
                Matcher::equal("reporter", "source"),
                Matcher::equal(src_name, &req.name),
                Matcher::equal(src_ns, &req.namespace),
            ],
            BY_DESTINATION,
            BY_DESTINATION_CODE,
        )
    };
    let peer = |g: &Group| -> String {
        match (g.get(split[0]), split.get(1).and_then(|l| g.get(*l))) {
            (Some(w), Some(ns)) => format!("{w}.{ns}"),
            (Some(w), None) => w.clone(),
            _ => "unknown".into(),
        }
    };
    let step = req.step_s.max(1) as i64 * 1000;
    let end = req.at - req.at % step;
    let start = end - (req.duration_s as i64 * 1000 / step).min(500) * step;
    // A window of four scrapes, as Istio's dashboards' `[1m]`, at least a step.
    let window_s = req.step_s.max(60);
    let rate = |metric: &'static str, by: &'static [&'static str]| Query::RateSum {
        metric,
        matchers: matchers.clone(),
        by,
        window_s,
    };
    let named = |rows: Vec<(Group, Vec<Option<f64>>)>| -> Vec<Value> {
        rows.iter()
            .map(|(g, v)| json!({"name": peer(g), "values": v}))
            .collect()
    };
    let requests = source
        .range(&rate("istio_requests_total", split), start, end, step)
        .await?;
    // Success rate per peer: non-5xx over all.
    let mut ok: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (g, values) in source
        .range(&rate("istio_requests_total", split_code), start, end, step)
        .await?
    {
        let five = g.get("response_code").is_some_and(|c| c.starts_with('5'));
        let slot = ok
            .entry(peer(&g))
            .or_insert_with(|| vec![(0.0, 0.0); values.len()]);
        for (i, v) in values.iter().enumerate() {
            if let (Some(v), Some(s)) = (v, slot.get_mut(i)) {
                s.1 += v;
                if !five {
                    s.0 += v;
                }
            }
        }
    }
    let success: Vec<Value> = ok
        .into_iter()
        .map(|(name, v)| {
            let values: Vec<Option<f64>> = v
                .iter()
                .map(|(ok, all)| (*all > 0.0).then(|| round(100.0 * ok / all)))
                .collect();
            json!({"name": name, "values": values})
        })
        .collect();
    let mut quantile_charts = Vec::new();
    for metric in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        let mut series = Vec::new();
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let query = Query::Quantile {
                q,
                metric,
                matchers: matchers.clone(),
                by: &[],
                window_s,
            };
            let rows = source.range(&query, start, end, step).await?;
            let values = rows.into_iter().next().map(|(_, v)| v).unwrap_or_default();
            series.push(json!({"name": name, "values": values}));
        }
        quantile_charts.push(series);
    }
    let tcp_received = source
        .range(
            &rate("istio_tcp_received_bytes_total", split),
            start,
            end,
            step,
        )
        .await?;
    let tcp_sent = source
        .range(&rate("istio_tcp_sent_bytes_total", split), start, end, step)
        .await?;
    let timestamps: Vec<i64> = (0..)
        .map(|i| (start + i * step) / 1000)
        .take_while(|t| *t <= end / 1000)
        .collect();
    let [latency, request_size, response_size]: [Vec<Value>; 3] =
        quantile_charts.try_into().unwrap_or_default();
    let chart = |id: &str, title: &str, unit: &str, series: Vec<Value>| json!({"id": id, "title": title, "unit": unit, "series": series});
    Ok(json!({
        "start": start / 1000,
        "end": end / 1000,
        "step": req.step_s,
        "timestamps": timestamps,
        "charts": [
            chart("requests", "Request volume", "req/s", named(requests)),
            chart("success", "Success rate (non-5xx)", "%", success),
            chart("latency", "Request duration", "ms", latency),
            chart("request_size", "Request size", "B", request_size),
            chart("response_size", "Response size", "B", response_size),
            chart("tcp_received", "TCP received", "B/s", named(tcp_received)),
            chart("tcp_sent", "TCP sent", "B/s", named(tcp_sent)),
        ],
    }))
}

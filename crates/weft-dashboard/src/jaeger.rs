//! The trace pages' Zipkin v2 query API answered from a real Jaeger's query API
//! (`/api/services`, `/api/services/{service}/operations`, `/api/traces`,
//! `/api/traces/{id}`), its JSON model translated into Zipkin's spans.

use crate::http_client::{self, GetError};
use crate::source::encode;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Services asked one by one when a search names none (Jaeger requires one).
const MAX_SERVICES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum JaegerError {
    #[error("{0}")]
    Get(#[from] GetError),
    #[error("the answer is not Jaeger's JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no endpoint {0} in Zipkin's v2 query API")]
    Unknown(String),
}

#[derive(Deserialize)]
struct Data<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    #[serde(default)]
    spans: Vec<Span>,
    #[serde(default)]
    processes: HashMap<String, Process>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Span {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(default)]
    operation_name: String,
    #[serde(default)]
    references: Vec<Reference>,
    #[serde(default)]
    start_time: u64,
    #[serde(default)]
    duration: u64,
    #[serde(default)]
    tags: Vec<KeyValue>,
    #[serde(default)]
    logs: Vec<Log>,
    #[serde(default, rename = "processID")]
    process_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reference {
    #[serde(default)]
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct Log {
    #[serde(default)]
    timestamp: u64,
    #[serde(default)]
    fields: Vec<KeyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    #[serde(default)]
    service_name: String,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

/// Answers Zipkin's `api` (`/api/v2/…`) with its `query` from the Jaeger at `base`.
pub async fn query(base: &http::Uri, api: &str, query: Option<&str>) -> Result<Value, JaegerError> {
    let params = crate::api::params(query);
    let param = |k: &str| params.get(k).filter(|v| !v.is_empty()).map(String::as_str);
    match api {
        "/api/v2/services" => Ok(json!(services(base).await?)),
        "/api/v2/spans" => {
            let Some(service) = param("serviceName") else {
                return Ok(json!([]));
            };
            let path = format!("/api/services/{}/operations", encode(service));
            let names: Data<Vec<String>> = get(base, &path).await?;
            let mut names = names.data.unwrap_or_default();
            names.sort();
            Ok(json!(names))
        }
        "/api/v2/traces" => {
            let limit = param("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
            let services = match param("serviceName") {
                Some(s) => vec![s.to_string()],
                None => {
                    let mut all = services(base).await?;
                    all.truncate(MAX_SERVICES);
                    all
                }
            };
            let mut traces = Vec::new();
            for service in services {
                let path = format!("/api/traces?{}", search(&service, &param, limit));
                let found: Data<Vec<Trace>> = get(base, &path).await?;
                traces.extend(found.data.unwrap_or_default().iter().map(zipkin_trace));
            }
            // Newest first, each trace once, as Zipkin answers.
            traces.sort_by_key(|t| std::cmp::Reverse(start(t)));
            traces.dedup_by(|a, b| trace_id(a) == trace_id(b));
            traces.truncate(limit);
            Ok(json!(traces))
        }
        p if p.starts_with("/api/v2/trace/") => {
            let id = &p["/api/v2/trace/".len()..];
            let path = format!("/api/traces/{}", encode(id));
            let found: Data<Vec<Trace>> = get(base, &path).await?;
            let spans = found
                .data
                .unwrap_or_default()
                .iter()
                .flat_map(zipkin_trace)
                .collect::<Vec<_>>();
            Ok(json!(spans))
        }
        other => Err(JaegerError::Unknown(other.to_string())),
    }
}

async fn get<T: serde::de::DeserializeOwned>(
    base: &http::Uri,
    path: &str,
) -> Result<T, JaegerError> {
    let body = http_client::get(base, path).await?;
    Ok(serde_json::from_slice(&body)?)
}

async fn services(base: &http::Uri) -> Result<Vec<String>, JaegerError> {
    let found: Data<Vec<String>> = get(base, "/api/services").await?;
    let mut names = found.data.unwrap_or_default();
    names.sort();
    Ok(names)
}

/// Jaeger's search parameters for Zipkin's: durations in µs become Go durations, `endTs` and
/// `lookback` (ms) become `start` and `end` (µs), and `annotationQuery`'s `k=v and k2` become
/// `tags` (a bare key as `"true"`: Jaeger matches values only).
fn search<'a>(service: &str, param: &impl Fn(&str) -> Option<&'a str>, limit: usize) -> String {
    let mut q = vec![
        format!("service={}", encode(service)),
        format!("limit={limit}"),
    ];
    if let Some(op) = param("spanName").filter(|op| *op != "all") {
        q.push(format!("operation={}", encode(op)));
    }
    for (zipkin, jaeger) in [
        ("minDuration", "minDuration"),
        ("maxDuration", "maxDuration"),
    ] {
        if let Some(us) = param(zipkin).and_then(|v| v.parse::<u64>().ok()) {
            q.push(format!("{jaeger}={us}us"));
        }
    }
    let end_ms = param("endTs").and_then(|v| v.parse::<u64>().ok());
    let lookback_ms = param("lookback").and_then(|v| v.parse::<u64>().ok());
    if let Some(end) = end_ms {
        q.push(format!("end={}", end * 1000));
        if let Some(lookback) = lookback_ms {
            q.push(format!("start={}", end.saturating_sub(lookback) * 1000));
        }
    }
    if let Some(annotations) = param("annotationQuery") {
        let tags: Map<String, Value> = annotations
            .split(" and ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (k.to_string(), json!(v)),
                None => (t.to_string(), json!("true")),
            })
            .collect();
        q.push(format!("tags={}", encode(&Value::Object(tags).to_string())));
    }
    q.join("&")
}

/// One Jaeger trace as Zipkin's list of spans.
fn zipkin_trace(trace: &Trace) -> Vec<Value> {
    trace
        .spans
        .iter()
        .map(|s| zipkin_span(s, trace.processes.get(&s.process_id)))
        .collect()
}

fn zipkin_span(s: &Span, process: Option<&Process>) -> Value {
    let mut tags = Map::new();
    let mut kind = None;
    for t in &s.tags {
        let value = text(&t.value);
        if t.key == "span.kind" {
            kind = Some(value.to_ascii_uppercase());
        } else {
            tags.insert(t.key.clone(), json!(value));
        }
    }
    let mut local = Map::new();
    if let Some(p) = process {
        local.insert("serviceName".into(), json!(p.service_name));
        if let Some(ip) = p.tags.iter().find(|t| t.key == "ip") {
            local.insert("ipv4".into(), json!(text(&ip.value)));
        }
    }
    let mut span = json!({
        "traceId": s.trace_id,
        "id": s.span_id,
        "name": s.operation_name,
        "timestamp": s.start_time,
        "duration": s.duration,
        "localEndpoint": local,
        "tags": tags,
    });
    let parent = s
        .references
        .iter()
        .find(|r| r.ref_type == "CHILD_OF")
        .or(s.references.first());
    if let Some(parent) = parent {
        span["parentId"] = json!(parent.span_id);
    }
    if let Some(kind) = kind {
        span["kind"] = json!(kind);
    }
    if !s.logs.is_empty() {
        let annotations: Vec<Value> = s.logs.iter().map(annotation).collect();
        span["annotations"] = json!(annotations);
    }
    span
}

/// A log as a Zipkin annotation: its `event` field, or every field as `k=v`.
fn annotation(log: &Log) -> Value {
    let value = match log.fields.iter().find(|f| f.key == "event") {
        Some(event) => text(&event.value),
        None => log
            .fields
            .iter()
            .map(|f| format!("{}={}", f.key, text(&f.value)))
            .collect::<Vec<_>>()
            .join(" "),
    };
    json!({ "timestamp": log.timestamp, "value": value })
}

/// Zipkin's tags are strings; Jaeger's are typed.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn start(trace: &[Value]) -> u64 {
    trace
        .iter()
        .filter_map(|s| s["timestamp"].as_u64())
        .min()
        .unwrap_or(0)
}

fn trace_id(trace: &[Value]) -> Option<&str> {
    trace.first().and_then(|s| s["traceId"].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jaeger_trace() -> Trace {
        serde_json::from_value(json!({
            "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
            "spans": [
                {"traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "00f067aa0ba902b7",
                 "operationName": "reviews.default.svc.cluster.local:9080/*",
                 "references": [{"refType": "CHILD_OF", "traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "a2fb4a1d1a96d312"}],
                 "startTime": 1700000000000100u64, "duration": 2500,
                 "tags": [{"key": "span.kind", "type": "string", "value": "client"},
                          {"key": "http.status_code", "type": "int64", "value": 503},
                          {"key": "error", "type": "bool", "value": true},
                          {"key": "response_flags", "type": "string", "value": "URX"}],
                 "logs": [{"timestamp": 1700000000000200u64, "fields": [{"key": "event", "type": "string", "value": "retry"}]}],
                 "processID": "p1"},
                {"traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "a2fb4a1d1a96d312",
                 "operationName": "productpage.default.svc.cluster.local:9080/productpage",
                 "references": [], "startTime": 1700000000000000u64, "duration": 9000,
                 "tags": [{"key": "span.kind", "type": "string", "value": "server"}], "processID": "p2"}
            ],
            "processes": {
                "p1": {"serviceName": "productpage.default", "tags": [{"key": "ip", "type": "string", "value": "10.44.0.3"}]},
                "p2": {"serviceName": "istio-ingressgateway.istio-system", "tags": []}
            }
        }))
        .unwrap()
    }

    #[test]
    fn spans_become_zipkins() {
        let spans = zipkin_trace(&jaeger_trace());
        let client = &spans[0];
        assert_eq!(client["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(client["parentId"], "a2fb4a1d1a96d312");
        assert_eq!(client["kind"], "CLIENT");
        assert_eq!(client["timestamp"], 1700000000000100u64);
        assert_eq!(client["duration"], 2500);
        assert_eq!(
            client["localEndpoint"]["serviceName"],
            "productpage.default"
        );
        assert_eq!(client["localEndpoint"]["ipv4"], "10.44.0.3");
        assert_eq!(client["tags"]["http.status_code"], "503");
        assert_eq!(client["tags"]["error"], "true");
        assert_eq!(client["tags"]["response_flags"], "URX");
        assert!(client["tags"].get("span.kind").is_none());
        assert_eq!(client["annotations"][0]["value"], "retry");
        assert!(spans[1].get("parentId").is_none());
        assert_eq!(spans[1]["kind"], "SERVER");
    }

    #[test]
    fn searches_become_jaegers() {
        let params: HashMap<&str, &str> = HashMap::from([
            ("spanName", "GET /productpage"),
            ("minDuration", "1500"),
            ("endTs", "1700000000000"),
            ("lookback", "3600000"),
            ("annotationQuery", "error and http.status_code=503"),
        ]);
        let param = |k: &str| params.get(k).copied();
        let q = search("productpage.default", &param, 20);
        assert_eq!(
            q,
            "service=productpage.default&limit=20&operation=GET%20%2Fproductpage\
             &minDuration=1500us&end=1700000000000000&start=1699996400000000\
             &tags=%7B%22error%22%3A%22true%22%2C%22http.status_code%22%3A%22503%22%7D"
        );
        let all = |k: &str| (k == "spanName").then_some("all");
        assert_eq!(search("a", &all, 10), "service=a&limit=10");
    }
}

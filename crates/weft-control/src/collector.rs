//! The built-in trace collector: takes spans as a Zipkin server does (`POST /api/v2/spans`,
//! v2 JSON) and answers Zipkin's v2 query API, enough for the Zipkin and Jaeger UIs and for
//! Weft's dashboard. Recent traces are kept in memory within a bound on spans and bytes;
//! the oldest traces go first.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Zipkin's default port, where Istio's proxies send spans (`zipkin.istio-system:9411`).
pub const ZIPKIN_PORT: u16 = 9411;
/// The largest batch accepted in one request.
const MAX_BODY: usize = 8 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_spans: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    /// About a minute of Bookinfo at 100 requests per second, fully sampled: 50,000 spans
    /// in at most 64 MiB.
    fn default() -> Limits {
        Limits {
            max_spans: 50_000,
            max_bytes: 64 << 20,
        }
    }
}

/// A span in Zipkin's v2 model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub timestamp: u64,
    pub value: String,
}

impl Span {
    fn service(&self) -> Option<&str> {
        self.local_endpoint.as_ref()?.service_name.as_deref()
    }

    /// Zipkin's normalisation: ids and names lower case, ids without leading padding
    /// beyond 16 digits of a 64-bit trace id.
    fn normalise(&mut self) -> bool {
        let hex = |s: &str, lens: &[usize]| {
            lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
        };
        self.trace_id.make_ascii_lowercase();
        self.id.make_ascii_lowercase();
        if self.trace_id.len() == 32 && self.trace_id.starts_with("0000000000000000") {
            self.trace_id.drain(..16);
        }
        if let Some(p) = &mut self.parent_id {
            p.make_ascii_lowercase();
        }
        for name in [&mut self.name]
            .into_iter()
            .chain(self.local_endpoint.as_mut().map(|e| &mut e.service_name))
            .chain(self.remote_endpoint.as_mut().map(|e| &mut e.service_name))
            .flatten()
        {
            name.make_ascii_lowercase();
        }
        hex(&self.trace_id, &[16, 32])
            && hex(&self.id, &[16])
            && self.parent_id.as_deref().is_none_or(|p| hex(p, &[16]))
    }
}

struct Trace {
    spans: Vec<Span>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    traces: HashMap<String, Trace>,
    /// Trace ids in the order they were first seen, oldest first.
    order: VecDeque<String>,
    spans: usize,
    bytes: usize,
}

/// The collector's store and its counters.
pub struct Collector {
    limits: Limits,
    inner: Mutex<Inner>,
}

/// What `GET /api/v2/traces` filters on.
#[derive(Debug, Default)]
pub struct Query {
    pub service: Option<String>,
    pub span_name: Option<String>,
    pub min_duration: Option<u64>,
    pub max_duration: Option<u64>,
    /// Milliseconds since the epoch; with `lookback`, the window spans must start in.
    pub end_ts: Option<u64>,
    pub lookback: Option<u64>,
    pub limit: usize,
    /// `error` or `http.status_code=500`, joined by ` and `.
    pub annotation_query: Option<String>,
}

impl Collector {
    pub fn new(limits: Limits) -> Collector {
        Collector {
            limits,
            inner: Mutex::default(),
        }
    }

    /// Stores spans; a span without a valid trace or span id is skipped. Returns how many
    /// were kept.
    pub fn ingest(&self, spans: Vec<Span>) -> usize {
        let mut inner = self.inner.lock();
        let mut kept = 0;
        for mut span in spans {
            if !span.normalise() {
                continue;
            }
            let bytes = serde_json::to_vec(&span).map_or(0, |b| b.len());
            let inner = &mut *inner;
            let trace = inner
                .traces
                .entry(span.trace_id.clone())
                .or_insert_with(|| {
                    inner.order.push_back(span.trace_id.clone());
                    Trace {
                        spans: Vec::new(),
                        bytes: 0,
                    }
                });
            trace.spans.push(span);
            trace.bytes += bytes;
            inner.spans += 1;
            inner.bytes += bytes;
            kept += 1;
        }
        while inner.spans > self.limits.max_spans || inner.bytes > self.limits.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(t) = inner.traces.remove(&oldest) {
                inner.spans -= t.spans.len();
                inner.bytes -= t.bytes;
            }
        }
        kept
    }

    pub fn services(&self) -> Vec<String> {
        let inner = self.inner.lock();
        let names: BTreeSet<&str> = inner
            .traces
            .values()
            .flat_map(|t| t.spans.iter().filter_map(Span::service))
            .collect();
        names.into_iter().map(str::to_string).collect()
    }

    pub fn span_names(&self, service: &str) -> Vec<String> {
        let inner = self.inner.lock();
        let names: BTreeSet<&str> = inner
            .traces
            .values()
            .flat_map(|t| t.spans.iter())
            .filter(|s| s.service() == Some(service))
            .filter_map(|s| s.name.as_deref())
            .collect();
        names.into_iter().map(str::to_string).collect()
    }

    pub fn trace(&self, id: &str) -> Option<Vec<Span>> {
        let mut id = id.to_ascii_lowercase();
        if id.len() == 32 && id.starts_with("0000000000000000") {
            id.drain(..16);
        }
        let inner = self.inner.lock();
        inner.traces.get(&id).map(|t| t.spans.clone())
    }

    /// Traces with a span meeting every condition, newest first.
    pub fn traces(&self, q: &Query) -> Vec<Vec<Span>> {
        let inner = self.inner.lock();
        let window = q.end_ts.map(|end| {
            let end_us = end.saturating_mul(1000);
            let lookback_us = q.lookback.unwrap_or(end).saturating_mul(1000);
            (end_us.saturating_sub(lookback_us), end_us)
        });
        let service = q.service.as_deref().map(str::to_ascii_lowercase);
        let span_name = q
            .span_name
            .as_deref()
            .filter(|n| *n != "all")
            .map(str::to_ascii_lowercase);
        let matches = |s: &Span| {
            service
                .as_deref()
                .is_none_or(|want| s.service() == Some(want))
                && span_name
                    .as_deref()
                    .is_none_or(|want| s.name.as_deref() == Some(want))
                && q.min_duration
                    .is_none_or(|min| s.duration.unwrap_or(0) >= min)
                && q.max_duration
                    .is_none_or(|max| s.duration.unwrap_or(0) <= max)
                && window
                    .is_none_or(|(from, to)| s.timestamp.is_some_and(|ts| ts >= from && ts <= to))
                && q.annotation_query
                    .as_deref()
                    .is_none_or(|aq| annotation_match(s, aq))
        };
        let mut out = Vec::new();
        for id in inner.order.iter().rev() {
            if out.len() >= q.limit {
                break;
            }
            let Some(t) = inner.traces.get(id) else {
                continue;
            };
            if t.spans.iter().any(matches) {
                out.push(t.spans.clone());
            }
        }
        out
    }
}

/// Zipkin's annotationQuery: `key` (a tag or an annotation value) or `key=value`, joined by
/// ` and `.
fn annotation_match(s: &Span, query: &str) -> bool {
    query
        .split(" and ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .all(|c| match c.split_once('=') {
            Some((k, v)) => s.tags.get(k).is_some_and(|t| t == v),
            None => s.tags.contains_key(c) || s.annotations.iter().any(|a| a.value == c),
        })
}

/// Serves the collector's API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, collector: Arc<Collector>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let collector = collector.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let collector = collector.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&collector, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn answer(collector: &Collector, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET {
        return query(collector, req.uri().path(), req.uri().query());
    }
    if (req.method(), req.uri().path()) != (&Method::POST, "/api/v2/spans") {
        return text(StatusCode::NOT_FOUND, USAGE);
    }
    let json = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("application/json"));
    if !json {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send spans as Zipkin v2 JSON (application/json)\n",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("{e}\n")),
    };
    match serde_json::from_slice::<Vec<Span>>(&body) {
        Ok(spans) => {
            collector.ingest(spans);
            text(StatusCode::ACCEPTED, "")
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            &format!("not a list of Zipkin v2 spans: {e}\n"),
        ),
    }
}

const USAGE: &str = "Zipkin v2 API: POST /api/v2/spans; GET /api/v2/services, /api/v2/spans, /api/v2/traces, /api/v2/trace/{id}\n";

/// Zipkin's v2 query API (`path` from `/api/v2/` on), for the collector's port and the
/// dashboard's trace pages.
pub fn query(collector: &Collector, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let params: HashMap<String, String> = query
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((decode(k)?, decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default();
    let param = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let number = |k: &str| param(k).and_then(|v| v.parse::<u64>().ok());
    match path {
        "/api/v2/services" => json(&collector.services()),
        "/api/v2/spans" => match param("serviceName") {
            Some(service) => json(&collector.span_names(&service.to_ascii_lowercase())),
            None => text(StatusCode::BAD_REQUEST, "serviceName is required\n"),
        },
        "/api/v2/traces" => {
            let q = Query {
                service: param("serviceName"),
                span_name: param("spanName"),
                min_duration: number("minDuration"),
                max_duration: number("maxDuration"),
                end_ts: number("endTs"),
                lookback: number("lookback"),
                limit: number("limit").map_or(10, |l| l as usize),
                annotation_query: param("annotationQuery"),
            };
            json(&collector.traces(&q))
        }
        p if p.starts_with("/api/v2/trace/") => {
            match collector.trace(&p["/api/v2/trace/".len()..]) {
                Some(spans) => json(&spans),
                None => text(StatusCode::NOT_FOUND, "no such trace\n"),
            }
        }
        "/health" => text(StatusCode::OK, "OK\n"),
        _ => text(StatusCode::NOT_FOUND, USAGE),
    }
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("serializable");
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, id: &str, service: &str, name: &str, ts: u64, duration: u64) -> Span {
        serde_json::from_value(serde_json::json!({
            "traceId": trace, "id": id, "name": name, "timestamp": ts, "duration": duration,
            "localEndpoint": {"serviceName": service}, "tags": {"http.status_code": "200"}
        }))
        .unwrap()
    }

    #[test]
    fn queries_filter_as_zipkin_does() {
        let c = Collector::new(Limits::default());
        c.ingest(vec![
            span(
                "00000000000000000000000000000abc",
                "0000000000000001",
                "Productpage.default",
                "a/*",
                1_000_000,
                50,
            ),
            span(
                "abc",
                "0000000000000002",
                "reviews.default",
                "b/*",
                1_000_010,
                5_000,
            ),
            span(
                "0000000000000def",
                "0000000000000003",
                "ratings.default",
                "c/*",
                2_000_000,
                10,
            ),
        ]);
        // "abc" is short for a trace id, so that span is skipped.
        assert_eq!(c.services(), ["productpage.default", "ratings.default"]);
        assert_eq!(c.trace("0000000000000abc").unwrap().len(), 1);
        let q = |f: fn(&mut Query)| {
            let mut q = Query {
                limit: 10,
                ..Default::default()
            };
            f(&mut q);
            c.traces(&q).len()
        };
        assert_eq!(q(|_| {}), 2);
        assert_eq!(q(|q| q.service = Some("ratings.default".into())), 1);
        assert_eq!(q(|q| q.min_duration = Some(40)), 1);
        assert_eq!(
            q(|q| {
                q.end_ts = Some(1_500);
                q.lookback = Some(1_000)
            }),
            1
        );
        assert_eq!(
            q(|q| q.annotation_query = Some("http.status_code=200".into())),
            2
        );
        assert_eq!(q(|q| q.annotation_query = Some("error".into())), 0);
        assert_eq!(q(|q| q.limit = 1), 1);
    }

    #[test]
    fn the_oldest_traces_go_when_the_bound_is_reached() {
        let c = Collector::new(Limits {
            max_spans: 10,
            max_bytes: usize::MAX,
        });
        for t in 1..=25u64 {
            c.ingest(vec![span(
                &format!("{t:016x}"),
                &format!("{t:016x}"),
                "s",
                "n",
                t,
                1,
            )]);
        }
        assert!(c.trace(&format!("{:016x}", 15)).is_none());
        assert!(c.trace(&format!("{:016x}", 16)).is_some());
        assert_eq!(
            c.traces(&Query {
                limit: 100,
                ..Default::default()
            })
            .len(),
            10
        );
    }
}

//! Distributed tracing as Istio's proxies do it: join the caller's trace or start one, make
//! one span per hop (CLIENT on the caller's sidecar and the gateway, SERVER on the callee's),
//! pass the new span's context on, and report sampled spans to the mesh's collector.

pub mod context;
pub mod export;
pub mod otlp;
pub mod span;

use super::access_log::Entry;
use super::policy::{TagValue, TracingPolicy};
use crate::workload::Workload;
use context::{Formats, SpanContext};
use http::HeaderMap;
use span::{Span, SpanKind};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What every span of this proxy says about who made it.
pub struct Tracer {
    reporter: export::Reporter,
    /// Istio's APP_LABEL_AND_NAMESPACE: `productpage.default`.
    service: Arc<str>,
    node_id: String,
    canonical_service: String,
    canonical_revision: String,
    namespace: String,
    ip: Option<IpAddr>,
}

impl Tracer {
    pub fn new(workload: &Workload, node_id: &str, reporter: export::Reporter) -> Tracer {
        let app = workload
            .labels
            .get("app")
            .map(String::as_str)
            .unwrap_or(workload.canonical_service());
        Tracer {
            reporter,
            service: format!("{app}.{}", workload.namespace).into(),
            node_id: node_id.into(),
            canonical_service: workload.canonical_service().into(),
            canonical_revision: workload.canonical_revision().into(),
            namespace: workload.namespace.clone(),
            ip: workload.instance_ip.parse().ok(),
        }
    }

    /// Joins the request's trace or starts one, and writes the new span's context into
    /// `headers` for the next hop. `None` when this side makes no span.
    pub fn begin(
        &self,
        policy: Option<&Arc<TracingPolicy>>,
        kind: SpanKind,
        headers: &mut HeaderMap,
    ) -> Option<ActiveSpan> {
        let policy = policy?;
        if !policy.spans_for(kind == SpanKind::Server) {
            return None;
        }
        let incoming = context::extract(headers);
        let parent = incoming.parent;
        let sampled = parent
            .and_then(|p| p.sampled)
            .or(incoming.sampled)
            .unwrap_or_else(|| crate::model::route::roll(policy.sampling));
        let ctx = SpanContext {
            trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
            span_id: new_id(),
            sampled: Some(sampled),
            debug: parent.is_some_and(|p| p.debug),
        };
        if policy.propagate {
            let formats = if parent.is_some() {
                incoming.formats
            } else {
                Formats::STARTED
            };
            context::inject(
                headers,
                &ctx,
                parent.map(|p| p.span_id),
                formats,
                incoming.tracestate.as_ref(),
            );
        }
        Some(ActiveSpan {
            policy: policy.clone(),
            ctx,
            parent: parent.map(|p| p.span_id),
            kind,
            start: SystemTime::now(),
            name: None,
            annotations: Vec::new(),
            custom: if sampled {
                custom_tags(policy, headers)
            } else {
                Vec::new()
            },
        })
    }

    /// Reports a finished span, if it was sampled and the policy names a collector.
    pub fn finish(&self, span: ActiveSpan, entry: &Entry) {
        if span.ctx.sampled != Some(true) {
            return;
        }
        let Some(collector) = &span.policy.collector else {
            return;
        };
        let limit = span.policy.max_tag_length;
        let mut tags: BTreeMap<Cow<'static, str>, String> = BTreeMap::new();
        let mut tag = |k: &'static str, v: &str| put_tag(&mut tags, k.into(), v, limit);
        let authority = entry.authority.as_deref().unwrap_or("");
        tag("component", "proxy");
        tag("node_id", &self.node_id);
        tag(
            "guid:x-request-id",
            entry.request_id.as_deref().unwrap_or(""),
        );
        tag("http.url", &format!("http://{authority}{}", entry.path));
        tag("http.method", &entry.method);
        tag("http.protocol", entry.protocol);
        tag("http.status_code", &entry.status.to_string());
        tag("response_flags", &entry.flags.to_string());
        tag("request_size", &entry.bytes_received.to_string());
        tag("response_size", &entry.bytes_sent.to_string());
        tag("downstream_cluster", "-");
        tag("user_agent", entry.user_agent.as_deref().unwrap_or("-"));
        let cluster = entry.upstream_cluster.as_deref().unwrap_or("-");
        tag("upstream_cluster", cluster);
        tag("upstream_cluster.name", cluster);
        if let Some(remote) = entry.downstream_remote {
            tag("peer.address", &remote.ip().to_string());
        }
        tag("istio.canonical_service", &self.canonical_service);
        tag("istio.canonical_revision", &self.canonical_revision);
        tag("istio.namespace", &self.namespace);
        tag("istio.mesh_id", "cluster.local");
        if entry.status >= 500 || entry.status == 0 {
            tag("error", "true");
        }
        for (name, value) in span.custom {
            put_tag(&mut tags, name.into(), &value, limit);
        }
        for (name, value) in &span.policy.custom_tags {
            if let TagValue::Format(format) = value {
                let value = entry.text(format);
                put_tag(&mut tags, name.clone().into(), &value, limit);
            }
        }
        let start = micros(span.start);
        let name = span.name.unwrap_or_else(|| format!("{authority}/*"));
        self.reporter.report(
            collector,
            Span {
                trace_id: span.ctx.trace_id,
                id: span.ctx.span_id,
                parent: span.parent,
                kind: span.kind,
                name,
                timestamp_us: start,
                duration_us: micros(SystemTime::now()).saturating_sub(start),
                service: self.service.clone(),
                local_ip: self.ip,
                remote: match span.kind {
                    SpanKind::Server => entry.downstream_remote,
                    SpanKind::Client => entry.upstream_host.as_deref().and_then(|h| h.parse().ok()),
                },
                tags,
                annotations: span.annotations,
                debug: span.ctx.debug,
            },
        );
    }
}

/// A span in progress: its context is already on the request going upstream.
pub struct ActiveSpan {
    policy: Arc<TracingPolicy>,
    ctx: SpanContext,
    parent: Option<u64>,
    kind: SpanKind,
    start: SystemTime,
    name: Option<String>,
    annotations: Vec<(u64, &'static str)>,
    /// `customTags`, with header values read from the request as it came.
    custom: Vec<(String, String)>,
}

fn custom_tags(policy: &TracingPolicy, headers: &HeaderMap) -> Vec<(String, String)> {
    policy
        .custom_tags
        .iter()
        .filter_map(|(name, value)| {
            let value = match value {
                TagValue::Literal(v) => v.clone(),
                TagValue::Header(h, default) => headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| default.clone())?,
                // Read from the finished request in `finish`.
                TagValue::Format(_) => return None,
            };
            Some((name.clone(), value))
        })
        .collect()
}

impl ActiveSpan {
    pub fn sampled(&self) -> bool {
        self.ctx.sampled == Some(true)
    }

    /// Names the span (Envoy's decorator: the route's virtual host and `/*`); the name is
    /// only built for a sampled span.
    pub fn name_with(&mut self, name: impl FnOnce() -> String) {
        if self.sampled() {
            self.name = Some(name());
        }
    }

    /// Marks something that happened to the request now: an injected fault.
    pub fn annotate(&mut self, what: &'static str) {
        self.annotate_at(SystemTime::now(), what);
    }

    /// Marks something that happened at `at`: a retry.
    pub fn annotate_at(&mut self, at: SystemTime, what: &'static str) {
        if self.sampled() {
            self.annotations.push((micros(at), what));
        }
    }
}

/// A tag, its value cut to `limit` bytes (at a character boundary).
fn put_tag(
    tags: &mut BTreeMap<Cow<'static, str>, String>,
    k: Cow<'static, str>,
    v: &str,
    limit: usize,
) {
    let mut end = v.len().min(limit);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    tags.insert(k, v[..end].to_string());
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn new_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

/// 128-bit, as Istio configures Envoy (`trace_id_128bit`).
fn new_trace_id() -> u128 {
    (u128::from(new_id()) << 64) | u128::from(fastrand::u64(..))
}

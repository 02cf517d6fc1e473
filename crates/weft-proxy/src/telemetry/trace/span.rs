//! A finished span, as the proxy reports it, and its Zipkin v2 JSON encoding.

use super::context::trace_hex;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SpanKind {
    /// The caller's sidecar (and the gateway) on the hop to the next service.
    Client,
    /// The callee's sidecar on the hop into its workload.
    Server,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: u128,
    pub id: u64,
    pub parent: Option<u64>,
    pub kind: SpanKind,
    /// `reviews.default.svc.cluster.local:9080/*`
    pub name: String,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub duration_us: u64,
    /// `productpage.default`: Istio's APP_LABEL_AND_NAMESPACE.
    pub service: std::sync::Arc<str>,
    pub local_ip: Option<std::net::IpAddr>,
    pub remote: Option<SocketAddr>,
    pub tags: BTreeMap<Cow<'static, str>, String>,
    /// (microseconds since the epoch, what happened): retries, faults.
    pub annotations: Vec<(u64, &'static str)>,
    pub debug: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan<'a> {
    trace_id: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    kind: SpanKind,
    name: &'a str,
    timestamp: u64,
    duration: u64,
    local_endpoint: Endpoint<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<Cow<'static, str>, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<Annotation>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    debug: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

#[derive(Serialize)]
struct Annotation {
    timestamp: u64,
    value: &'static str,
}

fn endpoint(
    service: Option<&str>,
    ip: Option<std::net::IpAddr>,
    port: Option<u16>,
) -> Endpoint<'_> {
    Endpoint {
        service_name: service,
        ipv4: ip.filter(|i| i.is_ipv4()).map(|i| i.to_string()),
        ipv6: ip.filter(|i| i.is_ipv6()).map(|i| i.to_string()),
        port,
    }
}

/// A batch as Zipkin's `POST /api/v2/spans` takes it: a JSON array of v2 spans.
pub fn zipkin_json(spans: &[Span]) -> Vec<u8> {
    let encoded: Vec<ZipkinSpan<'_>> = spans
        .iter()
        .map(|s| ZipkinSpan {
            trace_id: trace_hex(s.trace_id),
            id: format!("{:016x}", s.id),
            parent_id: s.parent.map(|p| format!("{p:016x}")),
            kind: s.kind,
            name: &s.name,
            timestamp: s.timestamp_us,
            duration: s.duration_us.max(1),
            local_endpoint: endpoint(Some(&s.service), s.local_ip, None),
            remote_endpoint: s
                .remote
                .map(|r| endpoint(None, Some(r.ip()), Some(r.port()))),
            tags: &s.tags,
            annotations: s
                .annotations
                .iter()
                .map(|&(timestamp, value)| Annotation { timestamp, value })
                .collect(),
            debug: s.debug,
        })
        .collect();
    serde_json::to_vec(&encoded).expect("spans serialize")
}

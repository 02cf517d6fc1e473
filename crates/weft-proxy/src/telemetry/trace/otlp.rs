//! Spans as OTLP/HTTP protobuf (`ExportTraceServiceRequest`), written with prost from the
//! subset of `opentelemetry/proto/trace/v1` the proxy fills. The field numbers are the
//! published ones; the tests decode the output with the official `opentelemetry-proto`
//! crate, which is too heavy (it pulls the OpenTelemetry SDK) to build into the proxy.

use super::span::{Span, SpanKind};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    spans: Vec<OtlpSpan>,
}

#[derive(Clone, PartialEq, Message)]
struct InstrumentationScope {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct OtlpSpan {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    /// SERVER = 2, CLIENT = 3.
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    events: Vec<Event>,
    #[prost(message, optional, tag = "15")]
    status: Option<Status>,
}

#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(fixed64, tag = "1")]
    time_unix_nano: u64,
    #[prost(string, tag = "2")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(string, tag = "2")]
    message: String,
    /// UNSET = 0, OK = 1, ERROR = 2.
    #[prost(int32, tag = "3")]
    code: i32,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(string, tag = "1")]
    string_value: String,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            string_value: value.into(),
        }),
    }
}

/// One `ResourceSpans` per service name, as an OpenTelemetry SDK groups them.
pub fn encode(spans: &[Span]) -> Vec<u8> {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    let mut services: Vec<&str> = Vec::new();
    for s in spans {
        let index = match services.iter().position(|n| *n == &*s.service) {
            Some(i) => i,
            None => {
                services.push(&s.service);
                resource_spans.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", &s.service)],
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "weft".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                        }),
                        spans: Vec::new(),
                    }],
                });
                resource_spans.len() - 1
            }
        };
        let start = s.timestamp_us * 1000;
        let error = s.tags.contains_key("error");
        resource_spans[index].scope_spans[0].spans.push(OtlpSpan {
            trace_id: s.trace_id.to_be_bytes().to_vec(),
            span_id: s.id.to_be_bytes().to_vec(),
            parent_span_id: s
                .parent
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            name: s.name.clone(),
            kind: match s.kind {
                SpanKind::Server => 2,
                SpanKind::Client => 3,
            },
            start_time_unix_nano: start,
            end_time_unix_nano: start + s.duration_us.max(1) * 1000,
            attributes: s.tags.iter().map(|(k, v)| kv(k, v)).collect(),
            events: s
                .annotations
                .iter()
                .map(|&(at, name)| Event {
                    time_unix_nano: at * 1000,
                    name: name.into(),
                })
                .collect(),
            status: Some(Status {
                message: String::new(),
                code: if error { 2 } else { 0 },
            }),
        });
    }
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

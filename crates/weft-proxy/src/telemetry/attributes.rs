//! Istio's attributes of one finished request or connection (`request.*`, `response.*`,
//! `source.*`, `destination.*`, `upstream.*`, `connection.*`, `xds.*`), as the CEL
//! expressions of access-log filters and metric tag overrides read them.

use super::access_log::Entry;
use cel::{Context, Env, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use weft_api::expression::Expression;

/// CEL's standard functions, built once for the process.
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

pub struct Attributes<'a> {
    pub entry: &'a Entry,
}

impl Attributes<'_> {
    /// `Ok(true)` only for an expression that is `true`; an error or another value is
    /// false, as Envoy's expression filter has it.
    pub fn admits(&self, filter: &Expression) -> bool {
        matches!(self.eval(filter), Ok(Value::Bool(true)))
    }

    /// The expression's value as a label value; `unknown` when it cannot be evaluated or is
    /// not a scalar, as Istio's stats plugin reports it.
    pub fn label(&self, expr: &Expression) -> String {
        match self.eval(expr) {
            Ok(Value::String(s)) => s.to_string(),
            Ok(Value::Int(i)) => i.to_string(),
            Ok(Value::UInt(u)) => u.to_string(),
            Ok(Value::Float(f)) => f.to_string(),
            Ok(Value::Bool(b)) => b.to_string(),
            _ => "unknown".into(),
        }
    }

    fn eval(&self, expr: &Expression) -> cel::ResolveResult {
        let mut context = Context::with_env(STDLIB.clone());
        context.set_variable_resolver(self);
        expr.program.execute(&context)
    }
}

fn map(entries: Vec<(&'static str, Value)>) -> Value {
    let map: HashMap<String, Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    map.into()
}

fn principal(p: &Option<Arc<str>>) -> Value {
    p.as_deref().map_or(Value::Null, Value::from)
}

/// An address's attributes, and those of `fields` that are known (absent, `has()` is
/// false, as in Envoy).
fn address(addr: Option<SocketAddr>, mut fields: Vec<(&'static str, Value)>) -> Value {
    fields.retain(|(_, v)| !matches!(v, Value::Null));
    if let Some(a) = addr {
        fields.push(("address", a.ip().to_string().into()));
        fields.push(("port", Value::Int(a.port().into())));
    }
    map(fields)
}

fn opt(value: &Option<String>) -> Value {
    value.as_deref().map_or(Value::Null, Value::from)
}

impl cel::context::VariableResolver for Attributes<'_> {
    fn resolve(&self, name: &str) -> Option<Value> {
        let e = self.entry;
        Some(match name {
            "request" => {
                let headers: HashMap<String, Value> = e
                    .request_headers
                    .iter()
                    .flat_map(|h| h.iter())
                    .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.into())))
                    .collect();
                let url_path = e.path.split_once('?').map_or(&*e.path, |(p, _)| p);
                let referer = headers.get("referer").cloned().unwrap_or(Value::Null);
                map(vec![
                    ("method", e.method.as_str().into()),
                    ("path", e.path.as_str().into()),
                    ("url_path", url_path.into()),
                    ("host", opt(&e.authority)),
                    ("scheme", "http".into()),
                    ("protocol", e.protocol.into()),
                    ("id", opt(&e.request_id)),
                    ("useragent", opt(&e.user_agent)),
                    ("referer", referer),
                    ("size", Value::Int(e.bytes_received as i64)),
                    ("total_size", Value::Int(e.bytes_received as i64)),
                    ("headers", headers.into()),
                ])
            }
            "response" => map(vec![
                ("code", Value::Int(e.status.into())),
                ("code_details", e.details.to_string().into()),
                ("flags", Value::UInt(e.flags.envoy_bits())),
                ("size", Value::Int(e.bytes_sent as i64)),
                ("total_size", Value::Int(e.bytes_sent as i64)),
            ]),
            "source" => address(
                e.downstream_remote,
                vec![("principal", principal(&e.downstream_peer_principal))],
            ),
            "destination" => address(e.downstream_local, Vec::new()),
            "upstream" => address(
                e.upstream_host.as_deref().and_then(|h| h.parse().ok()),
                vec![(
                    "uri_san_peer_certificate",
                    principal(&e.upstream_peer_principal),
                )],
            ),
            "connection" => map(vec![
                ("mtls", Value::Bool(e.downstream_mtls)),
                (
                    "uri_san_peer_certificate",
                    principal(&e.downstream_peer_principal),
                ),
            ]),
            "xds" => map(vec![
                ("cluster_name", opt(&e.upstream_cluster)),
                ("route_name", opt(&e.route_name)),
            ]),
            _ => return None,
        })
    }
}

/// Whether an expression reads `request`, so that the request's headers must be kept.
pub fn reads_request(expr: &Expression) -> bool {
    expr.program.references().variables().contains(&"request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::access_log::Flags;
    use weft_api::expression::parse;

    fn failed() -> Entry {
        let mut headers = http::HeaderMap::new();
        headers.insert("end-user", "jason".parse().unwrap());
        Entry {
            method: "GET".into(),
            path: "/reviews/0?x=1".into(),
            protocol: "HTTP/1.1",
            status: 503,
            flags: Flags::UF | Flags::URX,
            authority: Some("reviews:9080".into()),
            downstream_local: Some("10.0.0.2:9080".parse().unwrap()),
            upstream_cluster: Some("outbound|9080|v2|reviews.default.svc.cluster.local".into()),
            request_headers: Some(Arc::new(headers)),
            ..Default::default()
        }
    }

    #[test]
    fn istios_attributes_evaluate_over_a_request() {
        let entry = failed();
        let a = Attributes { entry: &entry };
        let yes = |s: &str| a.admits(&parse(s).unwrap());
        assert!(yes("response.code >= 400"));
        assert!(!yes("response.code < 400"));
        assert!(yes(
            "request.url_path == '/reviews/0' && request.method == 'GET'"
        ));
        assert!(yes("request.headers['end-user'] == 'jason'"));
        assert!(yes("!('x-missing' in request.headers)"));
        assert!(yes("has(request.useragent) || true"));
        assert!(yes("response.flags != 0u"));
        assert!(yes("xds.cluster_name.startsWith('outbound|9080|v2')"));
        // An error is no match, as in Envoy.
        assert!(!yes("request.headers['x-missing'] == 'a'"));
        assert!(!yes("response.code"));
        let label = |s: &str| a.label(&parse(s).unwrap());
        assert_eq!(label("request.host"), "reviews:9080");
        assert_eq!(label("string(destination.port)"), "9080");
        assert_eq!(label("destination.port"), "9080");
        assert_eq!(label("request.headers['nope']"), "unknown");
        assert!(reads_request(&parse("request.host").unwrap()));
        assert!(!reads_request(&parse("response.code > 1").unwrap()));
    }

    #[test]
    fn a_long_chain_evaluates_without_exhausting_the_stack() {
        let entry = failed();
        let a = Attributes { entry: &entry };
        let source = format!("{}1 == {}", "1 + ".repeat(1000), 1001);
        let parsed = parse(&source);
        // Refused as too deep, or evaluated: either way no crash.
        if let Ok(expr) = parsed {
            let _ = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let entry = failed();
                    Attributes { entry: &entry }.admits(&expr)
                })
                .unwrap()
                .join()
                .expect("no stack overflow");
        }
        assert!(a.admits(&parse("true").unwrap()));
    }
}

//! What one upstream cluster is, compiled from the registry and DestinationRules:
//! `outbound|9080|v1|reviews.default.svc.cluster.local`.

use crate::model::protocol::Protocol;
use crate::model::registry::Discovery;
pub use crate::transport::tls::{OriginateTls, SecretTls};
use http::HeaderName;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use weft_api::types::{self, SimpleLb};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterConfig {
    pub name: String,
    pub service: String,
    pub port: u16,
    pub subset: Option<String>,
    pub protocol: Protocol,
    pub discovery: Discovery,
    /// A Kubernetes Service or MESH_INTERNAL ServiceEntry: its endpoints are in the mesh,
    /// so requests carry peer metadata.
    pub mesh_internal: bool,
    pub endpoints: Vec<EndpointConfig>,
    pub lb: LbPolicy,
    pub limits: Limits,
    pub outlier: Option<OutlierConfig>,
    /// `DestinationRule ns/name` of the rules that shaped this cluster, merged as Istio
    /// merges rules for one host, oldest first.
    pub destination_rules: Vec<String>,
    /// Why the cluster cannot serve at all (an undefined subset), for the 503's hint.
    pub unusable: Option<String>,
    pub tls: UpstreamTls,
}

/// How connections to a cluster's endpoints are secured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum UpstreamTls {
    /// No DestinationRule TLS and auto mTLS off, an external service, or `DISABLE`.
    Plaintext,
    /// Istio's auto mTLS: `ISTIO_MUTUAL` to each endpoint labelled
    /// `security.istio.io/tlsMode: istio` (it has a sidecar) that no PeerAuthentication
    /// disables mTLS on, plaintext to the others.
    AutoMutual(MeshPeer),
    /// DestinationRule `ISTIO_MUTUAL`: the mesh's mTLS to every endpoint.
    IstioMutual(MeshPeer),
    /// DestinationRule `SIMPLE` or `MUTUAL`: TLS to a server outside the mesh.
    Originate(OriginateTls),
}

/// Istio's mTLS to a mesh destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshPeer {
    /// Istio's `outbound_.PORT_.SUBSET_.HOST`.
    pub sni: String,
    /// The SPIFFE IDs the destination's workloads may have (its service accounts); empty:
    /// any workload of the trust domain.
    pub identities: Vec<String>,
}

impl MeshPeer {
    pub fn sni(port: u16, subset: Option<&str>, host: &str) -> String {
        format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
    }
}

impl ClusterConfig {
    pub fn istio_name(direction: &str, port: u16, subset: Option<&str>, host: &str) -> String {
        format!("{direction}|{port}|{}|{host}", subset.unwrap_or(""))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointConfig {
    pub address: String,
    pub port: u16,
    /// It has a sidecar that takes Istio's mTLS on this port (see `compile`).
    pub mtls_ready: bool,
    pub labels: BTreeMap<String, String>,
    pub declared_by: String,
}

/// The label Istio's injector puts on a pod with a sidecar: callers may use mTLS to it.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    Passthrough,
    ConsistentHash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum HashKey {
    Header(#[serde(serialize_with = "ser_header")] HeaderName),
    Cookie(HashCookie),
    SourceIp,
    QueryParameter(String),
}

/// `consistentHash.httpCookie`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HashCookie {
    pub name: String,
    /// With a `ttl`, what follows `NAME="VALUE"` in the `Set-Cookie` the proxy answers
    /// with when the request lacks the cookie, as Envoy's: `; Max-Age=N` (none for a 0 ttl:
    /// a session cookie), `; Path=P` when given, `; HttpOnly`. Without a `ttl` no cookie
    /// is generated.
    pub generated_attributes: Option<String>,
}

impl HashCookie {
    fn from_api(c: &types::HttpCookie) -> HashCookie {
        let generated_attributes = c.ttl.map(|ttl| {
            let mut attributes = String::new();
            let max_age = ttl.as_std().as_secs();
            if max_age > 0 {
                attributes.push_str(&format!("; Max-Age={max_age}"));
            }
            if let Some(path) = c.path.as_deref().filter(|p| !p.is_empty()) {
                attributes.push_str(&format!("; Path={path}"));
            }
            attributes.push_str("; HttpOnly");
            attributes
        });
        HashCookie {
            name: c.name.clone(),
            generated_attributes,
        }
    }
}

fn ser_header<S: serde::Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    pub max_connections: usize,
    pub max_pending_requests: usize,
    pub max_requests: usize,
    pub max_retries: usize,
    pub max_requests_per_connection: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

/// Envoy's "unlimited", which is what Istio configures when a field is unset.
const UNLIMITED: usize = u32::MAX as usize;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: UNLIMITED,
            max_pending_requests: UNLIMITED,
            max_requests: UNLIMITED,
            max_retries: UNLIMITED,
            max_requests_per_connection: 0,
            // Istio's defaults: connectTimeout 10s, HTTP idle timeout 1h.
            idle_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierConfig {
    /// 0 disables the check.
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

/// The effective policy for one port of one subset: subset settings override the rule's,
/// port-level settings override both, field by field as Istio merges them.
pub fn effective_policy(
    rule: Option<&types::TrafficPolicy>,
    subset: Option<&types::TrafficPolicy>,
    port: u16,
) -> (LbPolicy, Limits, Option<OutlierConfig>) {
    let layers = Layers::new(rule, subset, port);
    let lb = layers.pick(|p| p.load_balancer.as_ref(), |p| p.load_balancer.as_ref());
    let pool = layers.pick(
        |p| p.connection_pool.as_ref(),
        |p| p.connection_pool.as_ref(),
    );
    let outlier = layers.pick(
        |p| p.outlier_detection.as_ref(),
        |p| p.outlier_detection.as_ref(),
    );
    (lb_policy(lb), limits(pool), outlier.map(outlier_config))
}

/// The `tls` in force for `port`, by the same precedence.
pub fn effective_tls<'a>(
    rule: Option<&'a types::TrafficPolicy>,
    subset: Option<&'a types::TrafficPolicy>,
    port: u16,
) -> Option<&'a types::ClientTlsSettings> {
    Layers::new(rule, subset, port).pick(|p| p.tls.as_ref(), |p| p.tls.as_ref())
}

/// A rule's traffic policy under its subset's, each with its settings for one port: a
/// setting comes from the most specific that has it, the subset's port-level first, then
/// the rule's port-level, then the subset's, then the rule's.
struct Layers<'a> {
    layers: Vec<&'a types::TrafficPolicy>,
    ports: Vec<&'a types::PortTrafficPolicy>,
}

impl<'a> Layers<'a> {
    fn new(
        rule: Option<&'a types::TrafficPolicy>,
        subset: Option<&'a types::TrafficPolicy>,
        port: u16,
    ) -> Layers<'a> {
        let layers: Vec<&types::TrafficPolicy> = rule.into_iter().chain(subset).collect();
        let ports = layers
            .iter()
            .flat_map(|p| p.port_level_settings.iter())
            .filter(|p| p.port.map(|s| s.number) == Some(u32::from(port)))
            .collect();
        Layers { layers, ports }
    }

    fn pick<T>(
        &self,
        at_port: impl Fn(&'a types::PortTrafficPolicy) -> Option<&'a T>,
        overall: impl Fn(&'a types::TrafficPolicy) -> Option<&'a T>,
    ) -> Option<&'a T> {
        self.ports
            .iter()
            .rev()
            .find_map(|p| at_port(p))
            .or_else(|| self.layers.iter().rev().find_map(|p| overall(p)))
    }
}

fn lb_policy(lb: Option<&types::LoadBalancerSettings>) -> LbPolicy {
    let Some(lb) = lb else {
        return LbPolicy::LeastRequest;
    };
    if let Some(hash) = &lb.consistent_hash {
        let key = if let Some(h) = hash
            .http_header_name
            .as_deref()
            .and_then(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
        {
            HashKey::Header(h)
        } else if let Some(c) = &hash.http_cookie {
            HashKey::Cookie(HashCookie::from_api(c))
        } else if let Some(q) = &hash.http_query_parameter_name {
            HashKey::QueryParameter(q.clone())
        } else {
            HashKey::SourceIp
        };
        return LbPolicy::ConsistentHash(key);
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        Some(SimpleLb::Passthrough) => LbPolicy::Passthrough,
        _ => LbPolicy::LeastRequest,
    }
}

fn limits(pool: Option<&types::ConnectionPoolSettings>) -> Limits {
    let mut l = Limits::default();
    let positive = |v: Option<i32>| v.filter(|v| *v > 0).map(|v| v as usize);
    if let Some(tcp) = pool.and_then(|p| p.tcp.as_ref()) {
        l.max_connections = positive(tcp.max_connections).unwrap_or(l.max_connections);
        l.connect_timeout = tcp
            .connect_timeout
            .map(|d| d.as_std())
            .unwrap_or(l.connect_timeout);
    }
    if let Some(http) = pool.and_then(|p| p.http.as_ref()) {
        l.max_pending_requests =
            positive(http.http1_max_pending_requests).unwrap_or(l.max_pending_requests);
        l.max_requests = positive(http.http2_max_requests).unwrap_or(l.max_requests);
        l.max_requests_per_connection = positive(http.max_requests_per_connection).unwrap_or(0);
        l.max_retries = positive(http.max_retries).unwrap_or(l.max_retries);
        l.idle_timeout = http
            .idle_timeout
            .map(|d| d.as_std())
            .unwrap_or(l.idle_timeout);
    }
    l
}

fn outlier_config(o: &types::OutlierDetection) -> OutlierConfig {
    // Istio: the deprecated consecutiveErrors means gateway errors only.
    let (five_xx, gateway) = match o.consecutive_errors {
        Some(n) if n > 0 && o.consecutive_5xx_errors.is_none() => (0, n as u32),
        _ => (
            o.consecutive_5xx_errors.unwrap_or(5),
            o.consecutive_gateway_errors.unwrap_or(0),
        ),
    };
    OutlierConfig {
        consecutive_5xx: five_xx,
        consecutive_gateway: gateway,
        interval: o
            .interval
            .map(|d| d.as_std())
            .unwrap_or(Duration::from_secs(10)),
        base_ejection_time: o
            .base_ejection_time
            .map(|d| d.as_std())
            .unwrap_or(Duration::from_secs(30)),
        max_ejection_percent: o.max_ejection_percent.unwrap_or(10).clamp(0, 100) as u32,
        min_health_percent: o.min_health_percent.unwrap_or(0).clamp(0, 100) as u32,
    }
}

//! Kiali's graph (`/api/namespaces/graph`): who called whom over a window, built from
//! Istio's standard metrics, with the badges Istio's config earns each service.
//!
//! Each request counts once: the caller's sidecar reports it (`reporter="source"`), and
//! the callee's does only for callers without one (`source_workload="unknown"`). Service
//! nodes sit between callers and the workloads behind a service, as Kiali injects them.

use crate::query::{bucket_quantile, Group, Query};
use crate::source::{MetricsSource, SourceError};
use crate::tsdb::Matcher;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use weft_api::types::service_entry::Location;
use weft_api::{host, Resource, Spec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum GraphType {
    App,
    VersionedApp,
    Workload,
    Service,
}

impl GraphType {
    pub fn parse(s: &str) -> Option<GraphType> {
        Some(match s {
            "app" => GraphType::App,
            "versionedApp" => GraphType::VersionedApp,
            "workload" => GraphType::Workload,
            "service" => GraphType::Service,
            _ => return None,
        })
    }
}

pub struct Request {
    /// Empty: every namespace with traffic.
    pub namespaces: BTreeSet<String>,
    pub graph_type: GraphType,
    pub duration_s: u64,
    /// Milliseconds since the epoch.
    pub at: i64,
}

const PEER: &[&str] = &[
    "source_workload_namespace",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_workload_namespace",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
];
/// [`PEER`] and `extra`.
fn peer_and(extra: &[&'static str]) -> Vec<&'static str> {
    PEER.iter().chain(extra).copied().collect()
}

/// The peers and what the destination's sidecar says secured the hop (only destination
/// reports know it), for Kiali's `isMTLS`.
static SECURITY: LazyLock<Vec<&str>> = LazyLock::new(|| peer_and(&["connection_security_policy"]));
static HTTP: LazyLock<Vec<&str>> = LazyLock::new(|| {
    peer_and(&[
        "request_protocol",
        "response_code",
        "grpc_response_status",
        "response_flags",
    ])
});
static LATENCY: LazyLock<Vec<&str>> = LazyLock::new(|| peer_and(&["le"]));

/// The two halves that count each request once (see the module's note).
fn reporters() -> [Vec<Matcher>; 2] {
    [
        vec![
            Matcher::equal("reporter", "source"),
            Matcher::NotEqual("source_workload".into(), "unknown".into()),
        ],
        vec![
            Matcher::equal("reporter", "destination"),
            Matcher::equal("source_workload", "unknown"),
        ],
    ]
}

async fn gather(
    source: &MetricsSource,
    metric: &'static str,
    by: &'static [&'static str],
    window_s: u64,
    at: i64,
) -> Result<Vec<(Group, f64)>, SourceError> {
    let mut rows = Vec::new();
    for matchers in reporters() {
        let q = Query::RateSum {
            metric,
            matchers,
            by,
            window_s,
        };
        rows.extend(source.instant(&q, at).await?);
    }
    Ok(rows)
}

/// One end of a call, as the metrics name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Peer {
    namespace: String,
    workload: String,
    app: String,
    version: String,
}

impl Peer {
    fn from(g: &Group, side: &str) -> Peer {
        let get = |k: &str| g.get(&format!("{side}_{k}")).cloned().unwrap_or_default();
        Peer {
            namespace: get("workload_namespace"),
            workload: get("workload"),
            app: get("canonical_service"),
            version: get("canonical_revision"),
        }
    }

    fn unknown(&self) -> bool {
        self.workload.is_empty() || self.workload == "unknown"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Service {
    namespace: String,
    name: String,
    host: String,
}

impl Service {
    fn from(g: &Group) -> Option<Service> {
        let host = g.get("destination_service").cloned().unwrap_or_default();
        let mut name = g
            .get("destination_service_name")
            .cloned()
            .unwrap_or_default();
        let mut namespace = g
            .get("destination_service_namespace")
            .cloned()
            .unwrap_or_default();
        if name.is_empty() || name == "unknown" {
            if host.is_empty() || host == "unknown" {
                return None;
            }
            name = host.clone();
        }
        if namespace.is_empty() || namespace == "unknown" {
            namespace = g
                .get("source_workload_namespace")
                .cloned()
                .unwrap_or_default();
        }
        Some(Service {
            namespace,
            name,
            host,
        })
    }
}

/// One response code's rate by response flag and by destination host.
type Responses = (BTreeMap<String, f64>, BTreeMap<String, f64>);

#[derive(Debug, Default, Clone)]
struct Traffic {
    protocol: &'static str,
    rate: f64,
    errors: f64,
    responses: BTreeMap<String, Responses>,
    buckets: BTreeMap<u64, f64>,
    tcp: f64,
    /// Requests and connections as destinations reported them, and how many were mTLS.
    secured: (f64, f64),
}

impl Traffic {
    fn add_http(&mut self, g: &Group, rate: f64) {
        let grpc = g.get("request_protocol").is_some_and(|p| p == "grpc");
        if self.protocol.is_empty() || self.protocol == "tcp" {
            self.protocol = if grpc { "grpc" } else { "http" };
        }
        self.rate += rate;
        let code = g.get("response_code").cloned().unwrap_or_default();
        let failed = if grpc {
            g.get("grpc_response_status")
                .is_some_and(|s| s != "0" && !s.is_empty())
        } else {
            code.starts_with('5') || code == "0"
        };
        if failed {
            self.errors += rate;
        }
        let (flags, hosts) = self.responses.entry(code).or_default();
        let flag = g
            .get("response_flags")
            .cloned()
            .unwrap_or_else(|| "-".into());
        *flags.entry(flag).or_default() += rate;
        let host = g.get("destination_service").cloned().unwrap_or_default();
        *hosts.entry(host).or_default() += rate;
    }

    fn to_json(&self, share_of_source: Option<f64>) -> Value {
        if self.protocol.is_empty() || (self.rate == 0.0 && self.tcp > 0.0) {
            return json!({"protocol": "tcp", "rates": {"tcp": format!("{:.2}", self.tcp)}});
        }
        let pct = |part: f64, whole: f64| {
            if whole > 0.0 {
                format!("{:.1}", 100.0 * part / whole)
            } else {
                "0.0".to_string()
            }
        };
        let p = self.protocol;
        let mut rates = Map::new();
        rates.insert(p.into(), format!("{:.2}", self.rate).into());
        rates.insert(format!("{p}PercentErr"), pct(self.errors, self.rate).into());
        if let Some(share) = share_of_source {
            rates.insert(format!("{p}PercentReq"), format!("{share:.1}").into());
        }
        let responses: Map<String, Value> = self
            .responses
            .iter()
            .map(|(code, (flags, hosts))| {
                // Shares of all the edge's requests, as Kiali gives them.
                let share = |m: &BTreeMap<String, f64>| -> Map<String, Value> {
                    m.iter()
                        .map(|(k, v)| (k.clone(), pct(*v, self.rate).into()))
                        .collect()
                };
                (
                    code.clone(),
                    json!({"flags": share(flags), "hosts": share(hosts)}),
                )
            })
            .collect();
        json!({"protocol": p, "rates": rates, "responses": responses})
    }

    /// Kiali's `isMTLS`: the percentage of the edge's traffic that was mTLS, when any was.
    fn mtls_percent(&self) -> Option<String> {
        let (all, mtls) = self.secured;
        (mtls > 0.0).then(|| format!("{:.0}", 100.0 * mtls / all))
    }

    fn p95(&self) -> Option<f64> {
        let mut b: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(le, r)| (f64::from_bits(*le), *r))
            .collect();
        bucket_quantile(0.95, &mut b)
    }
}

#[derive(Default)]
struct Builder {
    nodes: BTreeMap<String, Value>,
    edges: BTreeMap<(String, String), Traffic>,
    /// node id → (protocol → (in, out))
    totals: BTreeMap<String, BTreeMap<&'static str, (f64, f64)>>,
}

/// Builds the graph; `config` is every resource in force (for badges).
pub async fn build(
    source: &MetricsSource,
    config: &[std::sync::Arc<Resource>],
    req: &Request,
) -> Result<Value, SourceError> {
    let w = req.duration_s;
    let http = gather(source, "istio_requests_total", &HTTP, w, req.at).await?;
    let mut tcp = gather(source, "istio_tcp_sent_bytes_total", PEER, w, req.at).await?;
    tcp.extend(gather(source, "istio_tcp_received_bytes_total", PEER, w, req.at).await?);
    let latency = gather(
        source,
        "istio_request_duration_milliseconds_bucket",
        &LATENCY,
        w,
        req.at,
    )
    .await?;
    let destination = || vec![Matcher::equal("reporter", "destination")];
    let mut security = Vec::new();
    for metric in ["istio_requests_total", "istio_tcp_connections_opened_total"] {
        let q = Query::RateSum {
            metric,
            matchers: destination(),
            by: &SECURITY,
            window_s: w,
        };
        security.extend(source.instant(&q, req.at).await?);
    }

    let mut b = Builder::default();
    let wanted = |ns: &str| req.namespaces.is_empty() || req.namespaces.contains(ns);
    let mut rows: Vec<(Peer, Option<Service>, Peer, Kind, Group, f64)> = Vec::new();
    for (g, rate) in http {
        rows.push(row(g, rate, Kind::Http));
    }
    for (g, rate) in tcp {
        rows.push(row(g, rate, Kind::Tcp));
    }
    for (g, rate) in latency {
        rows.push(row(g, rate, Kind::Bucket));
    }
    for (g, rate) in security {
        rows.push(row(g, rate, Kind::Security));
    }
    for (src, svc, dst, kind, g, rate) in rows {
        let touches = wanted(&src.namespace)
            || svc.as_ref().is_some_and(|s| wanted(&s.namespace))
            || wanted(&dst.namespace);
        if !touches || (rate == 0.0 && kind != Kind::Bucket) {
            continue;
        }
        let from = b.peer_node(&src, req, &wanted);
        let svc_node = svc.as_ref().map(|s| b.service_node(s, config, &wanted));
        let to = (!dst.unknown()).then(|| b.peer_node(&dst, req, &wanted));
        let hops: Vec<(String, String)> = match (req.graph_type, svc_node, to) {
            (GraphType::Service, Some(s), _) => vec![(from, s)],
            (_, Some(s), Some(t)) => vec![(from, s.clone()), (s, t)],
            (_, Some(s), None) => vec![(from, s)],
            (_, None, Some(t)) => vec![(from, t)],
            (_, None, None) => vec![],
        };
        for hop in hops {
            if hop.0 == hop.1 {
                continue;
            }
            let edge = b.edges.entry(hop).or_default();
            match kind {
                Kind::Http => edge.add_http(&g, rate),
                Kind::Tcp => edge.tcp += rate,
                Kind::Bucket => {
                    if let Some(le) = g.get("le").and_then(|le| parse_le(le)) {
                        *edge.buckets.entry(le.to_bits()).or_default() += rate;
                    }
                }
                Kind::Security => {
                    edge.secured.0 += rate;
                    if g.get("connection_security_policy")
                        .is_some_and(|p| p == "mutual_tls")
                    {
                        edge.secured.1 += rate;
                    }
                }
            }
        }
    }
    Ok(b.finish(req))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Tcp,
    Bucket,
    Security,
}

fn row(g: Group, rate: f64, kind: Kind) -> (Peer, Option<Service>, Peer, Kind, Group, f64) {
    (
        Peer::from(&g, "source"),
        Service::from(&g),
        Peer::from(&g, "destination"),
        kind,
        g,
        rate,
    )
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        _ => le.parse().ok(),
    }
}

impl Builder {
    fn peer_node(&mut self, p: &Peer, req: &Request, wanted: &dyn Fn(&str) -> bool) -> String {
        if p.unknown() {
            self.nodes.entry("unknown".into()).or_insert_with(|| {
                json!({"id": "unknown", "nodeType": "unknown", "namespace": "unknown",
                       "workload": "unknown", "app": "unknown"})
            });
            return "unknown".into();
        }
        let outside = !wanted(&p.namespace);
        let (id, mut data) = match req.graph_type {
            GraphType::Workload => (
                format!("wl-{}-{}", p.namespace, p.workload),
                json!({"nodeType": "workload", "workload": p.workload, "app": p.app,
                       "version": p.version}),
            ),
            GraphType::App | GraphType::Service => (
                format!("app-{}-{}", p.namespace, p.app),
                json!({"nodeType": "app", "app": p.app}),
            ),
            GraphType::VersionedApp => {
                let parent = format!("box-{}-{}", p.namespace, p.app);
                self.nodes.entry(parent.clone()).or_insert_with(|| {
                    json!({"id": parent, "nodeType": "box", "isBox": "app",
                           "namespace": p.namespace, "app": p.app})
                });
                (
                    format!("app-{}-{}-{}", p.namespace, p.app, p.version),
                    json!({"nodeType": "app", "parent": parent, "app": p.app,
                           "version": p.version, "workload": p.workload}),
                )
            }
        };
        data["id"] = id.clone().into();
        data["namespace"] = p.namespace.clone().into();
        if outside {
            data["isOutside"] = true.into();
        }
        self.nodes.entry(id.clone()).or_insert(data);
        id
    }

    fn service_node(
        &mut self,
        s: &Service,
        config: &[std::sync::Arc<Resource>],
        wanted: &dyn Fn(&str) -> bool,
    ) -> String {
        let id = format!("svc-{}-{}", s.namespace, s.name);
        if !self.nodes.contains_key(&id) {
            let mut data = json!({"id": id, "nodeType": "service", "namespace": s.namespace,
                                  "service": s.name, "destServices": [{"namespace": s.namespace, "name": s.name}]});
            if !wanted(&s.namespace) {
                data["isOutside"] = true.into();
            }
            badges(&mut data, &s.host, config);
            self.nodes.insert(id.clone(), data);
        }
        id
    }

    fn finish(mut self, req: &Request) -> Value {
        // What each source sends in all, for `httpPercentReq`.
        let mut out_of: BTreeMap<String, f64> = BTreeMap::new();
        for ((from, _), t) in &self.edges {
            *out_of.entry(from.clone()).or_default() += t.rate;
        }
        let mut targets = BTreeSet::new();
        let mut edges = Vec::new();
        for ((from, to), t) in &self.edges {
            let proto = if t.rate > 0.0 { t.protocol } else { "tcp" };
            let rate = if proto == "tcp" { t.tcp } else { t.rate };
            let src = self.totals.entry(from.clone()).or_default();
            src.entry(proto).or_default().1 += rate;
            let dst = self.totals.entry(to.clone()).or_default();
            dst.entry(proto).or_default().0 += rate;
            targets.insert(to.clone());
            let whole = out_of.get(from).copied().unwrap_or_default();
            let split = self.edges.keys().filter(|(f, _)| f == from).count() > 1;
            let share = (split && whole > 0.0).then(|| 100.0 * t.rate / whole);
            let mut data = json!({
                "id": format!("{from}>{to}"),
                "source": from,
                "target": to,
                "traffic": t.to_json(share),
            });
            if let Some(p95) = t.p95() {
                data["responseTime"] = format!("{p95:.1}").into();
            }
            if let Some(mtls) = t.mtls_percent() {
                data["isMTLS"] = mtls.into();
            }
            edges.push(json!({ "data": data }));
        }
        // Kiali boxes an app's versions only when there is more than one.
        let mut children: BTreeMap<String, usize> = BTreeMap::new();
        for data in self.nodes.values() {
            if let Some(parent) = data["parent"].as_str() {
                *children.entry(parent.to_string()).or_default() += 1;
            }
        }
        let lone = |id: &str| children.get(id).copied().unwrap_or_default() < 2;
        let mut nodes = Vec::new();
        for (id, mut data) in std::mem::take(&mut self.nodes) {
            if data["nodeType"] == "box" && lone(&id) {
                continue;
            }
            if data["parent"].as_str().is_some_and(&lone) {
                if let Some(d) = data.as_object_mut() {
                    d.remove("parent");
                }
            }
            if data["nodeType"] != "box" {
                let traffic: Vec<Value> = self
                    .totals
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .map(|(p, (i, o))| {
                        let mut rates = Map::new();
                        if *i > 0.0 {
                            rates.insert(format!("{p}In"), format!("{i:.2}").into());
                        }
                        if *o > 0.0 {
                            rates.insert(format!("{p}Out"), format!("{o:.2}").into());
                        }
                        json!({"protocol": p, "rates": rates})
                    })
                    .collect();
                data["traffic"] = traffic.into();
                if !targets.contains(&id) {
                    data["isRoot"] = true.into();
                }
            }
            nodes.push(json!({ "data": data }));
        }
        json!({
            "timestamp": req.at / 1000,
            "duration": req.duration_s,
            "graphType": req.graph_type,
            "elements": {"nodes": nodes, "edges": edges},
        })
    }
}

/// Kiali's badges for the service at `host`, and Weft's list of what applies to it.
fn badges(data: &mut Value, host: &str, config: &[std::sync::Arc<Resource>]) {
    let mut applies = Vec::new();
    let mut weights = Vec::new();
    for r in config {
        let ns = r.metadata.namespace.as_deref().unwrap_or("default");
        let reference = || json!({"kind": r.kind.name(), "namespace": ns, "name": r.metadata.name});
        match &r.spec {
            // Only what routes the mesh's own calls: a gateway's VirtualService (Bookinfo's
            // `*` on bookinfo-gateway) is not about the services behind it.
            Spec::VirtualService(vs)
                if vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh") =>
            {
                let matched: Vec<&String> = vs
                    .hosts
                    .iter()
                    .filter(|h| {
                        let full = host::fqdn(h, ns);
                        full == host
                            || (full.starts_with('*') && host::wildcard_matches(&full, host))
                    })
                    .collect();
                if matched.is_empty() {
                    continue;
                }
                applies.push(reference());
                data["hasVS"] = json!({ "hostnames": matched });
                for route in &vs.http {
                    if route.fault.is_some() {
                        data["hasFaultInjection"] = true.into();
                    }
                    if route.timeout.is_some() {
                        data["hasRequestTimeout"] = true.into();
                    }
                    let weighted: Vec<_> = route
                        .route
                        .iter()
                        .filter(|d| d.weight.is_some_and(|w| w > 0))
                        .collect();
                    if weighted.len() > 1 {
                        data["hasTrafficShifting"] = true.into();
                        if weights.is_empty() {
                            weights = weighted
                                .iter()
                                .map(|d| {
                                    let dest = d.destination.as_ref();
                                    json!({
                                        "host": dest.map(|d| d.host.clone()).unwrap_or_default(),
                                        "subset": dest.and_then(|d| d.subset.clone()),
                                        "weight": d.weight,
                                    })
                                })
                                .collect();
                        }
                    }
                }
            }
            Spec::DestinationRule(dr) => {
                if host::fqdn(&dr.host, ns) != host {
                    continue;
                }
                applies.push(reference());
                let breaks = |p: &Option<weft_api::types::destination_rule::TrafficPolicy>| {
                    p.as_ref().is_some_and(|p| {
                        p.connection_pool.is_some() || p.outlier_detection.is_some()
                    })
                };
                if breaks(&dr.traffic_policy)
                    || dr.subsets.iter().any(|s| breaks(&s.traffic_policy))
                {
                    data["hasCB"] = true.into();
                }
            }
            Spec::ServiceEntry(se) => {
                let hosts: Vec<String> = se.hosts.iter().map(|h| host::fqdn(h, ns)).collect();
                if !hosts
                    .iter()
                    .any(|h| h == host || host::wildcard_matches(h, host))
                {
                    continue;
                }
                applies.push(reference());
                let location = match se.location {
                    Some(Location::MeshInternal) => "MESH_INTERNAL",
                    _ => "MESH_EXTERNAL",
                };
                data["isServiceEntry"] = json!({"location": location, "hosts": se.hosts});
            }
            _ => {}
        }
    }
    if !applies.is_empty() || !weights.is_empty() {
        data["weft"] = json!({"config": applies, "weights": weights});
    }
}

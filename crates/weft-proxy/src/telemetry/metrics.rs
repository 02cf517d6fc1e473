//! Istio's standard metrics (`istio_requests_total`, the request duration and size
//! histograms, `istio_tcp_*`) with Istio's labels, taken from each finished access-log
//! [`Entry`] and served as Prometheus text at `/stats/prometheus`; beside them Weft's
//! per-route metrics (`weft_route_*`), which Istio's labels cannot express.
//!
//! The labels fixed by who reports and which endpoint answered ([`Peers`]) are built once
//! per (cluster, endpoint) and config version, then shared: a request only hashes a
//! precomputed hash, its protocol, status and flags.

use super::access_log::{Entry, Flags};
use super::attributes::Attributes;
use super::peer::{self, Peer};
use super::policy::{MetricRule, MetricsPolicy, TagRule};
use crate::model::route::RouteId;
use crate::model::Snapshot;
use crate::workload::{self, Workload};
use http::HeaderValue;
use parking_lot::RwLock;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use weft_api::types::telemetry::IstioMetric;

/// Istio's default buckets, for milliseconds and bytes alike.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

const UNKNOWN: &str = "unknown";

/// Distinct peers remembered from their metadata; a peer beyond them is reported as
/// `unknown`, so that callers cannot grow the series without bound.
const MAX_PEERS: usize = 1024;

/// Counters are registered without `_total`; the exposition names them with it.
const COUNTERS: [&str; 8] = [
    "istio_requests",
    "weft_route_requests",
    "istio_request_messages",
    "istio_response_messages",
    "istio_tcp_connections_opened",
    "istio_tcp_connections_closed",
    "istio_tcp_sent_bytes",
    "istio_tcp_received_bytes",
];

/// Istio's labels before `request_protocol`, in Istio's order.
const PEER_LABELS: [&str; 20] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
];

/// Istio's labels after the peers', in Istio's order; with `PEER_LABELS`, the bits of
/// [`Custom::removed`].
const SAMPLE_LABELS: [&str; 5] = [
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

fn label_bit(name: &str) -> Option<u32> {
    let at = PEER_LABELS
        .iter()
        .chain(&SAMPLE_LABELS)
        .position(|l| *l == name)?;
    Some(1 << at)
}

/// One side of a call as Istio's labels describe a workload.
struct Side {
    workload: Arc<str>,
    canonical_service: Arc<str>,
    canonical_revision: Arc<str>,
    namespace: Arc<str>,
    app: Arc<str>,
    version: Arc<str>,
    cluster: Arc<str>,
}

impl Side {
    fn unknown() -> Side {
        let u: Arc<str> = UNKNOWN.into();
        Side {
            workload: u.clone(),
            canonical_service: u.clone(),
            canonical_revision: u.clone(),
            namespace: u.clone(),
            app: u.clone(),
            version: u.clone(),
            cluster: u,
        }
    }

    /// Canonical service and revision follow Istio's label fallbacks; the workload's name is
    /// its `service.istio.io/workload-name` label where it has one (Istio's, as an announced
    /// workload carries it).
    fn new(name: Option<&str>, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> Side {
        let label = |key: &str| labels.get(key).map(String::as_str);
        let name = label("service.istio.io/workload-name")
            .or(name)
            .filter(|n| !n.is_empty());
        Side {
            workload: name.unwrap_or(UNKNOWN).into(),
            canonical_service: workload::canonical_service(labels)
                .or(name)
                .unwrap_or(UNKNOWN)
                .into(),
            canonical_revision: workload::canonical_revision(labels).into(),
            namespace: namespace
                .filter(|n| !n.is_empty())
                .unwrap_or(UNKNOWN)
                .into(),
            app: label("app").unwrap_or(UNKNOWN).into(),
            version: label("version").unwrap_or(UNKNOWN).into(),
            // A named workload is in the mesh's one cluster; an external endpoint is not.
            cluster: if name.is_some() {
                peer::CLUSTER
            } else {
                UNKNOWN
            }
            .into(),
        }
    }

    fn of_workload(w: &Workload) -> Side {
        Side::new(Some(&w.name), Some(&w.namespace), &w.labels)
    }

    fn of_peer(p: &Peer) -> Side {
        Side {
            cluster: p.cluster.as_str().into(),
            ..Side::new(Some(&p.workload), Some(&p.namespace), &p.labels)
        }
    }
}

/// `destination_service`, `destination_service_name`, `destination_service_namespace`.
struct Service {
    host: Arc<str>,
    name: Arc<str>,
    namespace: Arc<str>,
}

impl Service {
    fn of(snapshot: &Snapshot, host: &str) -> Service {
        let namespace = snapshot
            .registry
            .by_host(host)
            .map(|s| s.namespace.as_str());
        let name = match host.strip_suffix(".svc.cluster.local") {
            Some(short) => short.split('.').next().unwrap_or(short),
            // Istio names a ServiceEntry host, BlackHoleCluster and PassthroughCluster whole.
            None => host,
        };
        Service {
            host: host.into(),
            name: name.into(),
            namespace: namespace.unwrap_or(UNKNOWN).into(),
        }
    }
}

/// The registry's service a Host names; `unknown` for any other Host, so that callers
/// cannot add series at will.
fn by_authority(snapshot: &Snapshot, authority: &str) -> Service {
    let name = match authority.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => authority,
    };
    let fqdn = weft_api::host::fqdn(name, &snapshot.workload.namespace);
    match snapshot.registry.by_host(&fqdn) {
        Some(s) => Service::of(snapshot, &s.hostname),
        None => Service::of(snapshot, UNKNOWN),
    }
}

/// The labels fixed by the reporter and the endpoint that answered.
#[derive(Debug)]
pub struct Peers {
    values: [Arc<str>; 20],
    security: &'static str,
    hash: u64,
}

/// What mTLS proved about a hop: whether it was mTLS, and each side's SPIFFE ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Principals {
    mtls: bool,
    source: Option<Arc<str>>,
    destination: Option<Arc<str>>,
}

impl Principals {
    /// Inbound, the caller proved itself to this proxy; outbound, the server did.
    fn of(entry: &Entry, inbound: bool, own: Option<&Arc<str>>) -> Principals {
        let mtls = if inbound {
            entry.downstream_mtls
        } else {
            entry.upstream_peer_principal.is_some()
        };
        let own = own.filter(|_| mtls).cloned();
        if inbound {
            Principals {
                mtls,
                source: entry.downstream_peer_principal.clone(),
                destination: own,
            }
        } else {
            Principals {
                mtls,
                source: own,
                destination: entry.upstream_peer_principal.clone(),
            }
        }
    }
}

impl Peers {
    fn new(inbound: bool, src: &Side, dst: &Side, svc: &Service, principals: &Principals) -> Peers {
        let reporter: Arc<str> = if inbound { "destination" } else { "source" }.into();
        let principal = |p: &Option<Arc<str>>| p.clone().unwrap_or_else(|| UNKNOWN.into());
        let values = [
            reporter,
            src.workload.clone(),
            src.canonical_service.clone(),
            src.canonical_revision.clone(),
            src.namespace.clone(),
            principal(&principals.source),
            src.app.clone(),
            src.version.clone(),
            src.cluster.clone(),
            dst.workload.clone(),
            dst.namespace.clone(),
            principal(&principals.destination),
            dst.app.clone(),
            dst.version.clone(),
            svc.host.clone(),
            dst.canonical_service.clone(),
            dst.canonical_revision.clone(),
            svc.name.clone(),
            svc.namespace.clone(),
            dst.cluster.clone(),
        ];
        // Istio: `none` or `mutual_tls` on destination reports, `unknown` on source reports.
        let security = match (inbound, principals.mtls) {
            (false, _) => UNKNOWN,
            (true, true) => "mutual_tls",
            (true, false) => "none",
        };
        // Fixed keys: equal label sets built apart must hash alike.
        let mut hasher = std::hash::DefaultHasher::new();
        (&values, security).hash(&mut hasher);
        let hash = hasher.finish();
        Peers {
            values,
            security,
            hash,
        }
    }
}

impl PartialEq for Peers {
    fn eq(&self, o: &Peers) -> bool {
        std::ptr::eq(self, o)
            || (self.hash == o.hash && self.security == o.security && self.values == o.values)
    }
}

impl Eq for Peers {}

impl Hash for Peers {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// One sample's label set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Labels {
    peers: Arc<Peers>,
    protocol: &'static str,
    /// The response code and, for gRPC, its status when seen; TCP metrics have neither.
    response: Option<(u16, Option<u16>)>,
    flags: Flags,
    /// What Telemetry's tag overrides changed; `None` without overrides.
    custom: Option<Box<Custom>>,
}

impl Hash for Labels {
    /// The fields folded into one word first: each `write` into the families' SipHash
    /// costs a round, and every request looks its labels up in four families.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut fold = Fold(0);
        self.peers.hash(&mut fold);
        self.protocol.hash(&mut fold);
        self.response.hash(&mut fold);
        self.flags.hash(&mut fold);
        self.custom.hash(&mut fold);
        state.write_u64(fold.0);
    }
}

/// A multiply-and-rotate fold (FxHash's step): cheap, and good enough to key a map whose
/// hasher mixes the result again.
struct Fold(u64);

impl Hasher for Fold {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A metric's labels as a Telemetry override changed them for one sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Custom {
    /// Bit `i`: the `i`th of Istio's labels is left out, removed or upserted anew.
    removed: u32,
    upserted: Vec<(Arc<str>, String)>,
}

impl Labels {
    /// The labels `rule` makes of these for the sample `entry` describes.
    fn customized(&self, rule: &MetricRule, entry: &Entry) -> Labels {
        let mut custom = Custom {
            removed: 0,
            upserted: Vec::new(),
        };
        let attributes = Attributes { entry };
        for (name, tag) in &rule.tags {
            custom.removed |= label_bit(name).unwrap_or(0);
            if let TagRule::Upsert(value) = tag {
                custom
                    .upserted
                    .push((name.as_str().into(), attributes.label(value)));
            }
        }
        Labels {
            custom: Some(Box::new(custom)),
            ..self.clone()
        }
    }

    /// These labels, or none when `policy` turns `metric` off.
    fn for_metric<'l>(
        &'l self,
        policy: Option<&MetricsPolicy>,
        inbound: bool,
        metric: IstioMetric,
        entry: &Entry,
    ) -> Option<Cow<'l, Labels>> {
        match policy.and_then(|p| p.rule(inbound, metric)) {
            None => Some(Cow::Borrowed(self)),
            Some(rule) if rule.disabled => None,
            Some(rule) if rule.tags.is_empty() => Some(Cow::Borrowed(self)),
            Some(rule) => Some(Cow::Owned(self.customized(rule, entry))),
        }
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, mut enc: LabelSetEncoder) -> std::fmt::Result {
        let removed = self.custom.as_ref().map_or(0, |c| c.removed);
        let peers = PEER_LABELS.len();
        let mut label = |at: usize, key: &str, value: &str| match removed & (1 << at) {
            0 => (key, value).encode(enc.encode_label()),
            _ => Ok(()),
        };
        for (at, (key, value)) in PEER_LABELS.iter().zip(&self.peers.values).enumerate() {
            label(at, key, value)?;
        }
        label(peers, SAMPLE_LABELS[0], self.protocol)?;
        if let Some((code, grpc)) = self.response {
            label(peers + 1, SAMPLE_LABELS[1], &code.to_string())?;
            let grpc = match (self.protocol, grpc) {
                ("grpc", Some(status)) => status.to_string(),
                ("grpc", None) => UNKNOWN.into(),
                _ => String::new(),
            };
            label(peers + 2, SAMPLE_LABELS[2], &grpc)?;
        }
        label(peers + 3, SAMPLE_LABELS[3], &self.flags.to_string())?;
        label(peers + 4, SAMPLE_LABELS[4], self.peers.security)?;
        for (key, value) in self.custom.iter().flat_map(|c| &c.upserted) {
            (&**key, value.as_str()).encode(enc.encode_label())?;
        }
        Ok(())
    }
}

type Histograms<L = Labels> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + Eq + Hash>() -> Histograms<L> {
    Histograms::new_with_constructor(|| Histogram::new(BUCKETS))
}

/// A `weft_route_*` series: the route and, for the request counter, the response code. The
/// reporter and source workload are the registry's constant labels.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteLabels {
    id: Arc<RouteId>,
    code: Option<u16>,
}

impl Hash for RouteLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut fold = Fold(0);
        self.id.hash(&mut fold);
        self.code.hash(&mut fold);
        state.write_u64(fold.0);
    }
}

impl EncodeLabelSet for RouteLabels {
    fn encode(&self, mut enc: LabelSetEncoder) -> std::fmt::Result {
        let id = &self.id;
        ("destination_service", &*id.host).encode(enc.encode_label())?;
        let vs_namespace = &*id.virtual_service_namespace;
        ("virtual_service_namespace", vs_namespace).encode(enc.encode_label())?;
        ("virtual_service_name", &*id.virtual_service_name).encode(enc.encode_label())?;
        ("route", &*id.route).encode(enc.encode_label())?;
        match self.code {
            Some(code) => ("response_code", code).encode(enc.encode_label()),
            None => Ok(()),
        }
    }
}

/// Label sets by cluster name, upstream host, the peer's metadata (its address in
/// `Metrics::seen`, 0 for none) and what mTLS proved, for one config version.
#[derive(Default)]
struct PeerCache {
    version: u64,
    by_cluster: FastMap<String, FastMap<String, ByPeer>>,
}

/// Keyed by names from config and by addresses, looked up three times a request: foldhash,
/// seeded per process, instead of SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Label sets of one upstream host by the peer's metadata and what mTLS proved.
type ByPeer = FastMap<(usize, Principals), Arc<Peers>>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Histograms,
    request_bytes: Histograms,
    response_bytes: Histograms,
    tcp_opened: Family<Labels, Counter>,
    tcp_closed: Family<Labels, Counter>,
    tcp_sent: Family<Labels, Counter>,
    tcp_received: Family<Labels, Counter>,
    request_messages: Family<Labels, Counter>,
    response_messages: Family<Labels, Counter>,
    route_requests: Family<RouteLabels, Counter>,
    route_duration: Histograms<RouteLabels>,
    own: Side,
    /// This proxy's SPIFFE ID, when it has one.
    own_principal: Option<Arc<str>>,
    cache: RwLock<PeerCache>,
    /// Peers by a hash of the metadata header they sent (a header may be kilobytes), decoded
    /// once.
    seen: RwLock<HashMap<u64, Option<Arc<Side>>>>,
    seen_hasher: std::hash::RandomState,
    trace_stats: Arc<super::trace::export::Stats>,
}

impl Metrics {
    pub fn new(workload: &Workload) -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            duration: histograms(),
            request_bytes: histograms(),
            response_bytes: histograms(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            request_messages: Family::default(),
            response_messages: Family::default(),
            route_requests: Family::default(),
            route_duration: histograms(),
            own: Side::of_workload(workload),
            own_principal: None,
            cache: RwLock::default(),
            seen: RwLock::default(),
            seen_hasher: Default::default(),
            trace_stats: Default::default(),
        };
        let mut registry = Registry::default();
        let r = &mut registry;
        let build: Family<Vec<(&'static str, &'static str)>, Gauge> = Family::default();
        build
            .get_or_create(&vec![
                ("component", "proxy"),
                ("tag", env!("CARGO_PKG_VERSION")),
            ])
            .set(1);
        r.register("istio_build", "The proxy's build", build);
        r.register("istio_requests", "Requests", m.requests.clone());
        r.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            m.duration.clone(),
        );
        r.register(
            "istio_request_bytes",
            "Request body sizes in bytes",
            m.request_bytes.clone(),
        );
        r.register(
            "istio_response_bytes",
            "Response body sizes in bytes",
            m.response_bytes.clone(),
        );
        r.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            m.tcp_opened.clone(),
        );
        r.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            m.tcp_closed.clone(),
        );
        r.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream on TCP connections",
            m.tcp_sent.clone(),
        );
        r.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream on TCP connections",
            m.tcp_received.clone(),
        );
        r.register(
            "istio_request_messages",
            "gRPC messages sent by the client",
            m.request_messages.clone(),
        );
        r.register(
            "istio_response_messages",
            "gRPC messages sent by the server",
            m.response_messages.clone(),
        );
        let by_route = r.sub_registry_with_labels(
            [
                ("reporter", "source".to_string()),
                ("source_workload", m.own.workload.to_string()),
                ("source_workload_namespace", m.own.namespace.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into())),
        );
        by_route.register(
            "weft_route_requests",
            "Requests by the VirtualService route that answered them",
            m.route_requests.clone(),
        );
        by_route.register(
            "weft_route_request_duration_milliseconds",
            "Request duration in milliseconds by the VirtualService route",
            m.route_duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Names this proxy's side by `principal` on mTLS hops.
    pub fn with_principal(self, principal: Option<Arc<str>>) -> Metrics {
        Metrics {
            own_principal: principal,
            ..self
        }
    }

    /// What a request's labels will be, decided when the response headers are known (the
    /// body's end adds only flags). `peer` is the metadata header the other end's sidecar
    /// sent: the caller's on inbound, the answering workload's on outbound.
    pub fn http(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        inbound: bool,
        grpc: bool,
        headers: &http::HeaderMap,
        entry: &Entry,
        peer: Option<&HeaderValue>,
    ) -> HttpSample {
        let grpc_status = headers
            .get(crate::http::headers::GRPC_STATUS)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        HttpSample {
            metrics: self.clone(),
            peers: self.peers(snapshot, inbound, entry, peer.and_then(|p| self.peer(p))),
            protocol: if grpc { "grpc" } else { "http" },
            grpc_status,
            route: None,
            policy: snapshot.telemetry.metrics.clone(),
            inbound,
        }
    }

    /// Counts a TCP connection as opened once its upstream connect was tried.
    pub fn tcp_opened(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        entry: &Entry,
        inbound: bool,
    ) -> TcpSample {
        // TCP carries no metadata header: the caller is the workload the registry has at
        // the connection's source address.
        let caller = inbound
            .then(|| {
                entry
                    .downstream_remote
                    .and_then(|r| self.caller_at(snapshot, r.ip()))
            })
            .flatten();
        let labels = Labels {
            peers: self.peers(snapshot, inbound, entry, caller),
            protocol: "tcp",
            response: None,
            flags: entry.flags,
            custom: None,
        };
        let policy = snapshot.telemetry.metrics.as_deref();
        let for_metric = |metric| {
            labels
                .for_metric(policy, inbound, metric, entry)
                .map(Cow::into_owned)
        };
        if let Some(opened) = for_metric(IstioMetric::TcpOpenedConnections) {
            self.tcp_opened.get_or_create(&opened).inc();
        }
        TcpSample {
            every: policy
                .and_then(|p| p.reporting_interval)
                .unwrap_or(crate::transport::splice::FLUSH),
            metrics: self.clone(),
            sent: for_metric(IstioMetric::TcpSentBytes),
            received: for_metric(IstioMetric::TcpReceivedBytes),
            closed: for_metric(IstioMetric::TcpClosedConnections),
        }
    }

    /// The peer a metadata header describes; `None` for a header that does not decode, or
    /// once `MAX_PEERS` others are remembered.
    fn peer(&self, metadata: &HeaderValue) -> Option<Arc<Side>> {
        let key = self.seen_hasher.hash_one(metadata.as_bytes());
        if let Some(side) = self.seen.read().get(&key) {
            return side.clone();
        }
        let mut seen = self.seen.write();
        if seen.len() >= MAX_PEERS {
            return None;
        }
        let side = peer::decode(metadata).map(|p| Arc::new(Side::of_peer(&p)));
        seen.insert(key, side.clone());
        side
    }

    /// The workload the registry knows at `ip` (an announced or declared WorkloadEntry), as
    /// one shared `Side` per distinct description (the peer cache's key).
    fn caller_at(&self, snapshot: &Snapshot, ip: std::net::IpAddr) -> Option<Arc<Side>> {
        let endpoint = snapshot.registry.workload_at(&ip.to_string())?;
        let entry = endpoint.declared_by.strip_prefix("WorkloadEntry ");
        let (namespace, name) = entry.and_then(|n| n.split_once('/')).unzip();
        let side = Side::new(name, namespace, &endpoint.labels);
        let key = self.seen_hasher.hash_one((
            "registry",
            &*side.workload,
            &*side.namespace,
            &endpoint.labels,
        ));
        if let Some(found) = self.seen.read().get(&key) {
            return found.clone();
        }
        let mut seen = self.seen.write();
        if seen.len() >= MAX_PEERS {
            return None;
        }
        let side = Some(Arc::new(side));
        seen.insert(key, side.clone());
        side
    }

    fn peers(
        &self,
        snapshot: &Snapshot,
        inbound: bool,
        entry: &Entry,
        peer: Option<Arc<Side>>,
    ) -> Arc<Peers> {
        let host = entry.upstream_host.as_deref().unwrap_or("");
        let principals = Principals::of(entry, inbound, self.own_principal.as_ref());
        let (cluster, host) = match (inbound, entry.upstream_cluster.as_deref()) {
            (true, _) => ("inbound", host),
            (false, None) => {
                // A fault abort or no route: the Host names the service. Not cached, as
                // the caller chooses the Host.
                let svc = by_authority(snapshot, entry.authority.as_deref().unwrap_or(""));
                let unknown = Side::unknown();
                return Arc::new(Peers::new(false, &self.own, &unknown, &svc, &principals));
            }
            // One entry for every address these send to.
            (false, Some(c @ ("PassthroughCluster" | "BlackHoleCluster"))) => (c, ""),
            (false, Some(c)) => (c, host),
        };
        // `seen` holds every peer for the proxy's life, so its address names it.
        let key = (
            peer.as_ref().map_or(0, |p| Arc::as_ptr(p) as usize),
            principals,
        );
        {
            let cache = self.cache.read();
            if cache.version == snapshot.version {
                let found = cache.by_cluster.get(cluster).and_then(|h| h.get(host));
                if let Some(p) = found.and_then(|by_peer| by_peer.get(&key)) {
                    return p.clone();
                }
            }
        }
        let principals = &key.1;
        let peers = Arc::new(if inbound {
            self.inbound_peers(snapshot, host, peer.as_deref(), principals)
        } else {
            self.outbound_peers(snapshot, cluster, host, peer.as_deref(), principals)
        });
        let mut cache = self.cache.write();
        if cache.version != snapshot.version {
            // Endpoints and their labels may have changed with the config.
            *cache = PeerCache {
                version: snapshot.version,
                by_cluster: FastMap::default(),
            };
        }
        cache
            .by_cluster
            .entry(cluster.to_string())
            .or_default()
            .entry(host.to_string())
            .or_default()
            .insert(key, peers.clone());
        peers
    }

    /// The destination is the workload that answered: as its sidecar described itself, else
    /// as its WorkloadEntry labels it.
    fn outbound_peers(
        &self,
        snapshot: &Snapshot,
        cluster: &str,
        host: &str,
        peer: Option<&Side>,
        principals: &Principals,
    ) -> Peers {
        let Some(c) = snapshot.clusters.get(cluster) else {
            // BlackHoleCluster or PassthroughCluster.
            let svc = Service::of(snapshot, cluster);
            return Peers::new(false, &self.own, &Side::unknown(), &svc, principals);
        };
        let svc = Service::of(snapshot, &c.config.service);
        if let Some(dst) = peer {
            return Peers::new(false, &self.own, dst, &svc, principals);
        }
        let dst = match c.endpoints.iter().find(|e| e.authority == host) {
            Some(e) => {
                let entry = e.declared_by.strip_prefix("WorkloadEntry ");
                let (namespace, name) = entry.and_then(|n| n.split_once('/')).unzip();
                Side::new(name, namespace, &e.labels)
            }
            None => Side::unknown(),
        };
        Peers::new(false, &self.own, &dst, &svc, principals)
    }

    /// The source is the caller as its sidecar described itself, else unknown. The service
    /// is the one with an endpoint at the address the request was for.
    fn inbound_peers(
        &self,
        snapshot: &Snapshot,
        host: &str,
        peer: Option<&Side>,
        principals: &Principals,
    ) -> Peers {
        // The service this workload is an endpoint of; else the one the app's address is
        // (a sidecar that was given no address of its own).
        let ip = host.rsplit_once(':').map_or(host, |(ip, _)| ip);
        let own = snapshot
            .registry
            .endpoint_at(&snapshot.workload.instance_ip);
        let svc = match own.or_else(|| snapshot.registry.endpoint_at(ip)) {
            Some((s, _)) => Service::of(snapshot, &s.hostname),
            None => Service::of(snapshot, UNKNOWN),
        };
        let unknown = Side::unknown();
        Peers::new(true, peer.unwrap_or(&unknown), &self.own, &svc, principals)
    }

    /// The span exporter's counters, rendered with the rest.
    pub fn trace_stats(&self) -> Arc<super::trace::export::Stats> {
        self.trace_stats.clone()
    }

    /// Prometheus' text format (0.0.4), as Envoy's `/stats/prometheus` serves it.
    pub fn render(&self) -> String {
        let mut open_metrics = String::new();
        let _ =
            prometheus_client::encoding::text::encode_registry(&mut open_metrics, &self.registry);
        let mut out = String::with_capacity(open_metrics.len() + 64);
        for line in open_metrics.lines() {
            let meta = line
                .strip_prefix("# HELP ")
                .map(|rest| ("# HELP ", rest))
                .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
            match meta {
                Some((kind, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let suffix = if COUNTERS.contains(&name) {
                        "_total"
                    } else {
                        ""
                    };
                    out.push_str(&format!("{kind}{name}{suffix} {tail}\n"));
                }
                None => {
                    out.push_str(&whole_bounds(line));
                    out.push('\n');
                }
            }
        }
        self.trace_stats.render(&mut out);
        out
    }
}

/// A bucket's bound as Prometheus' clients and Envoy write it (`le="100"`, not
/// prometheus-client's `le="100.0"`), so that queries selecting on `le` match.
fn whole_bounds(line: &str) -> std::borrow::Cow<'_, str> {
    let label = [",le=\"", "{le=\""]
        .iter()
        .find_map(|p| line.rfind(p).map(|i| i + p.len()));
    let Some(start) = label else {
        return line.into();
    };
    let Some(len) = line[start..].find('"') else {
        return line.into();
    };
    match line[start..start + len].strip_suffix(".0") {
        Some(whole) => format!("{}{whole}{}", &line[..start], &line[start + len..]).into(),
        None => line.into(),
    }
}

/// A request's labels, written when its response body ends.
pub struct HttpSample {
    metrics: Arc<Metrics>,
    peers: Arc<Peers>,
    protocol: &'static str,
    grpc_status: Option<u16>,
    route: Option<Arc<RouteId>>,
    policy: Option<Arc<MetricsPolicy>>,
    inbound: bool,
}

impl HttpSample {
    /// Also counts the request for the route that answered it.
    pub fn for_route(self, route: Option<Arc<RouteId>>) -> HttpSample {
        HttpSample { route, ..self }
    }

    /// `trailer_status` is the trailers' `grpc-status`, which wins over the headers' (a
    /// trailers-only response puts it in the headers). `messages`: the gRPC messages each
    /// way, (request, response).
    pub fn record(self, entry: &Entry, trailer_status: Option<u16>, messages: Option<(u64, u64)>) {
        let m = &self.metrics;
        let labels = Labels {
            peers: self.peers,
            protocol: self.protocol,
            response: Some((entry.status, trailer_status.or(self.grpc_status))),
            flags: entry.flags,
            custom: None,
        };
        let for_metric =
            |metric| labels.for_metric(self.policy.as_deref(), self.inbound, metric, entry);
        if let Some(l) = for_metric(IstioMetric::RequestCount) {
            m.requests.get_or_create(&l).inc();
        }
        if let Some(l) = for_metric(IstioMetric::RequestDuration) {
            m.duration
                .get_or_create(&l)
                .observe(entry.duration_ms as f64);
        }
        if let Some(l) = for_metric(IstioMetric::RequestSize) {
            let size = entry.bytes_received as f64;
            m.request_bytes.get_or_create(&l).observe(size);
        }
        if let Some(l) = for_metric(IstioMetric::ResponseSize) {
            m.response_bytes
                .get_or_create(&l)
                .observe(entry.bytes_sent as f64);
        }
        if let Some((sent, received)) = messages {
            if let Some(l) = for_metric(IstioMetric::GrpcRequestMessages) {
                m.request_messages.get_or_create(&l).inc_by(sent);
            }
            if let Some(l) = for_metric(IstioMetric::GrpcResponseMessages) {
                m.response_messages.get_or_create(&l).inc_by(received);
            }
        }
        if let Some(id) = self.route {
            let mut route = RouteLabels { id, code: None };
            m.route_duration
                .get_or_create(&route)
                .observe(entry.duration_ms as f64);
            route.code = Some(entry.status);
            m.route_requests.get_or_create(&route).inc();
        }
    }
}

/// An open TCP connection's labels for each metric it still reports (`None`: turned off).
pub struct TcpSample {
    /// How often the connection's bytes are reported while it lives.
    pub every: std::time::Duration,
    metrics: Arc<Metrics>,
    sent: Option<Labels>,
    received: Option<Labels>,
    closed: Option<Labels>,
}

impl TcpSample {
    /// Bytes since the last report: received from and sent to the downstream.
    pub fn bytes(&self, received: u64, sent: u64) {
        let m = &self.metrics;
        if let Some(l) = &self.sent {
            m.tcp_sent.get_or_create(l).inc_by(sent);
        }
        if let Some(l) = &self.received {
            m.tcp_received.get_or_create(l).inc_by(received);
        }
    }

    pub fn closed(self) {
        if let Some(l) = &self.closed {
            self.metrics.tcp_closed.get_or_create(l).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::parse_labels;

    fn productpage() -> Workload {
        Workload {
            name: "productpage-v1".into(),
            namespace: "default".into(),
            labels: parse_labels("app=productpage,version=v1").unwrap(),
            service_account: "bookinfo-productpage".into(),
            ..Workload::default()
        }
    }

    #[test]
    fn blackhole_requests_render_in_prometheus_text() {
        let workload = productpage();
        let metrics = Arc::new(Metrics::new(&workload));
        let snapshot = Snapshot::empty(workload, Default::default());
        let entry = Entry {
            status: 502,
            upstream_cluster: Some("BlackHoleCluster".into()),
            ..Default::default()
        };
        for _ in 0..2 {
            metrics
                .http(
                    &snapshot,
                    false,
                    false,
                    &http::HeaderMap::new(),
                    &entry,
                    None,
                )
                .record(&entry, None, None);
        }
        let text = metrics.render();
        assert!(
            text.contains("# TYPE istio_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram\n"));
        assert!(!text.contains("# EOF"));
        assert!(text.contains(&format!(
            "istio_build{{component=\"proxy\",tag=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        // Bounds as Prometheus' clients write them, so `{le="100"}` selects a bucket.
        for le in ["0.5", "100", "3600000", "+Inf"] {
            let bucket = format!("_bucket{{le=\"{le}\",reporter=\"source\",");
            assert!(text.contains(&bucket), "{le}: {text}");
        }
        assert!(!text.contains(".0\","), "{text}");
        let sample = "istio_requests_total{reporter=\"source\",source_workload=\"productpage-v1\",\
            source_canonical_service=\"productpage\",source_canonical_revision=\"v1\",\
            source_workload_namespace=\"default\",source_principal=\"unknown\",\
            source_app=\"productpage\",source_version=\"v1\",source_cluster=\"Kubernetes\",\
            destination_workload=\"unknown\",destination_workload_namespace=\"unknown\",\
            destination_principal=\"unknown\",destination_app=\"unknown\",\
            destination_version=\"unknown\",destination_service=\"BlackHoleCluster\",\
            destination_canonical_service=\"unknown\",destination_canonical_revision=\"unknown\",\
            destination_service_name=\"BlackHoleCluster\",\
            destination_service_namespace=\"unknown\",destination_cluster=\"unknown\",\
            request_protocol=\"http\",response_code=\"502\",grpc_response_status=\"\",\
            response_flags=\"-\",connection_security_policy=\"unknown\"} 2\n";
        assert!(text.contains(sample), "{text}");
    }

    #[test]
    fn requests_are_counted_by_the_route_that_answered() {
        let workload = productpage();
        let metrics = Arc::new(Metrics::new(&workload));
        let snapshot = Snapshot::empty(workload, Default::default());
        let host = "reviews.default.svc.cluster.local";
        let v3 = || Arc::new(RouteId::new(host, Some(("default", "reviews")), "http[1]"));
        for (status, route) in [(200, v3()), (503, v3()), (200, v3())] {
            let entry = Entry {
                status,
                duration_ms: 7,
                upstream_cluster: Some("BlackHoleCluster".into()),
                ..Default::default()
            };
            metrics
                .http(
                    &snapshot,
                    false,
                    false,
                    &http::HeaderMap::new(),
                    &entry,
                    None,
                )
                .for_route(Some(route))
                .record(&entry, None, None);
        }
        let text = metrics.render();
        assert!(
            text.contains("# TYPE weft_route_requests_total counter\n"),
            "{text}"
        );
        let labels = "destination_service=\"reviews.default.svc.cluster.local\",\
            virtual_service_namespace=\"default\",virtual_service_name=\"reviews\",\
            route=\"http[1]\"";
        let source = "reporter=\"source\",source_workload=\"productpage-v1\",\
            source_workload_namespace=\"default\"";
        for (code, n) in [(200, 2), (503, 1)] {
            let line = format!(
                "weft_route_requests_total{{{source},{labels},response_code=\"{code}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
        let bucket = format!(
            "weft_route_request_duration_milliseconds_bucket{{{source},le=\"10\",{labels}}} 3\n"
        );
        assert!(text.contains(&bucket), "{bucket}\n{text}");
    }

    #[test]
    fn equal_peers_built_twice_are_one_series() {
        let own = Side::of_workload(&productpage());
        let svc = Service {
            host: "reviews.default.svc.cluster.local".into(),
            name: "reviews".into(),
            namespace: "default".into(),
        };
        let a = Peers::new(false, &own, &Side::unknown(), &svc, &Principals::default());
        let b = Peers::new(false, &own, &Side::unknown(), &svc, &Principals::default());
        assert_eq!(a, b);
        let [ha, hb] = [&a, &b].map(|p| {
            let mut h = std::hash::DefaultHasher::new();
            p.hash(&mut h);
            h.finish()
        });
        assert_eq!(ha, hb);
    }
}

//! The compiled configuration a proxy serves from: one immutable [`Snapshot`] per config
//! version, swapped atomically, so the request path reads it without locks.

pub mod compile;
mod gateway;
pub mod matcher;
pub mod protocol;
pub mod registry;
pub mod route;
mod secrets;

use crate::security::authz::Authz;
use crate::security::jwt::RequestAuthn;
use crate::telemetry::policy::TelemetryPolicy;
use crate::upstream::Cluster;
use crate::workload::Workload;
use ipnet::IpNet;
use registry::Registry;
use route::{Route, WeightedClusters};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use weft_api::peer_authentication::EffectiveMtls;
use weft_api::types::OutboundTrafficMode;
use weft_api::Resource;

pub use compile::{compile, compile_within};

pub struct Snapshot {
    pub version: u64,
    pub workload: Workload,
    pub outbound_policy: OutboundTrafficMode,
    pub registry: Registry,
    /// HTTP route tables by the port the caller addressed.
    pub http: HashMap<u16, RouteConfig>,
    /// TCP routes by (service host, port).
    pub tcp: HashMap<(String, u16), L4Routes>,
    /// TLS routes by port, chosen by SNI.
    pub tls: HashMap<u16, Vec<TlsRoute>>,
    /// What each port of the Gateway servers that select this workload serves; a gateway
    /// proxy listens on these ports.
    pub gateway_ports: HashMap<u16, GatewayPort>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    pub resources: Vec<Resource>,
    /// Access logs and tracing for this workload, from MeshConfig and Telemetry.
    pub telemetry: TelemetryPolicy,
    /// What PeerAuthentication asks of inbound connections, per workload port.
    pub inbound_mtls: EffectiveMtls,
    /// The AuthorizationPolicies that apply to this workload.
    pub authz: Authz,
    /// The RequestAuthentications that apply to this workload.
    pub request_authn: RequestAuthn,
    /// MeshConfig's `proxyHeaders.server`: `None` when it says nothing (the proxy's own
    /// setting holds), `Some(None)` when disabled.
    pub server: Option<Option<crate::ServerNames>>,
}

impl Snapshot {
    pub fn empty(workload: Workload, outbound_policy: OutboundTrafficMode) -> Snapshot {
        Snapshot {
            version: 0,
            workload,
            outbound_policy,
            registry: Registry::default(),
            http: HashMap::new(),
            tcp: HashMap::new(),
            tls: HashMap::new(),
            gateway_ports: HashMap::new(),
            clusters: BTreeMap::new(),
            resources: Vec::new(),
            telemetry: TelemetryPolicy::default(),
            inbound_mtls: EffectiveMtls::default(),
            authz: Authz::default(),
            request_authn: RequestAuthn::default(),
            server: None,
        }
    }

    /// The virtual host for `authority` on `port`, falling back to the service that owns
    /// the original destination address when the Host names nothing known.
    pub fn virtual_host(
        &self,
        port: u16,
        authority: &str,
        original_dst: Option<SocketAddr>,
    ) -> Option<&VirtualHost> {
        let table = self.http.get(&port)?;
        table.find(authority).or_else(|| {
            let dst = original_dst?;
            let svc = self.registry.by_address(dst.ip(), dst.port())?;
            table.find(&svc.hostname)
        })
    }
}

/// All virtual hosts reachable on one port (Envoy's route configuration `"9080"`).
#[derive(Default)]
pub struct RouteConfig {
    pub port: u16,
    pub vhosts: Vec<VirtualHost>,
    by_domain: HashMap<String, usize>,
    /// `*.example.com` hosts, longest suffix first.
    wildcards: Vec<(String, usize)>,
}

impl RouteConfig {
    pub fn add(&mut self, vhost: VirtualHost) {
        let index = self.vhosts.len();
        for domain in &vhost.domains {
            match domain.strip_prefix('*') {
                Some(suffix) => self.wildcards.push((suffix.to_string(), index)),
                None => {
                    self.by_domain.entry(domain.clone()).or_insert(index);
                }
            }
        }
        self.wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        self.vhosts.push(vhost);
    }

    pub fn find(&self, authority: &str) -> Option<&VirtualHost> {
        let exact = |name: &str| self.by_domain.get(name).map(|&i| &self.vhosts[i]);
        let lower;
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = authority.to_ascii_lowercase();
            &lower
        } else {
            authority
        };
        if let Some(v) = exact(authority) {
            return Some(v);
        }
        let host = strip_port(authority);
        exact(host).or_else(|| {
            self.wildcards
                .iter()
                .find(|(suffix, _)| {
                    suffix.is_empty()
                        || (host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                })
                .map(|&(_, i)| &self.vhosts[i])
        })
    }
}

/// `reviews:9080` → `reviews`; `[::1]:80` → `[::1]`.
pub fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(':') =>
        {
            host
        }
        _ => authority,
    }
}

pub struct VirtualHost {
    /// `reviews.default.svc.cluster.local:9080`
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    /// `VirtualService ns/name` whose routes these are, if any.
    pub virtual_service: Option<String>,
    /// A Gateway server's `tls.httpsRedirect`: plaintext requests get a 301 to https.
    pub require_tls: bool,
}

impl VirtualHost {
    /// The first route whose match holds, as Istio orders `http[]`, and which `match[]`
    /// entry chose it.
    pub fn route_for(&self, req: &matcher::RequestView<'_>) -> Option<(&Route, Option<usize>)> {
        self.routes
            .iter()
            .find_map(|r| r.find_match(req).map(|m| (r, m)))
    }
}

/// One port of a gateway's Gateway servers (Envoy's listener and its filter chains). The
/// first server on a port decides whether it is plaintext HTTP, plaintext TCP or TLS; a
/// later server of another kind is skipped, saying so.
pub enum GatewayPort {
    /// HTTP, HTTP2 and GRPC servers, their virtual hosts merged (Istio's `http.PORT`).
    Http(RouteConfig),
    /// TCP servers: the bound VirtualServices' first `tcp` route, if any.
    Tcp(Option<WeightedClusters>),
    /// HTTPS and TLS servers, chosen by the ClientHello's server name.
    Tls(Vec<GatewayServer>),
}

impl GatewayPort {
    /// The server of a TLS port for a ClientHello's `sni`: an exact host first, then the
    /// longest wildcard, then `*` (which also takes a ClientHello without SNI).
    pub fn server_for(&self, sni: Option<&str>) -> Option<&GatewayServer> {
        let GatewayPort::Tls(servers) = self else {
            return None;
        };
        let sni = sni.map(str::to_ascii_lowercase);
        let score = |server: &GatewayServer| {
            server
                .hosts
                .iter()
                .filter_map(|h| match (h.as_str(), sni.as_deref()) {
                    ("*", _) => Some(0),
                    (h, Some(sni)) if h == sni => Some(usize::MAX),
                    (h, Some(sni))
                        if h.starts_with('*') && weft_api::host::wildcard_matches(h, sni) =>
                    {
                        Some(h.len())
                    }
                    _ => None,
                })
                .max()
        };
        servers
            .iter()
            .filter_map(|s| score(s).map(|n| (n, s)))
            .fold(
                None,
                |best: Option<(usize, &GatewayServer)>, (n, s)| match best {
                    Some((m, _)) if m >= n => best,
                    _ => Some((n, s)),
                },
            )
            .map(|(_, s)| s)
    }

    /// The HTTP routes for a connection the gateway took, by the server whose TLS it
    /// terminated (none: plaintext).
    pub fn http_routes(&self, server: Option<&str>) -> Option<&RouteConfig> {
        match (self, server) {
            (GatewayPort::Http(table), None) => Some(table),
            (GatewayPort::Tls(servers), Some(name)) => servers
                .iter()
                .find(|s| &*s.name == name)
                .and_then(|s| match &s.serves {
                    Serves::Http(table) => Some(table),
                    _ => None,
                }),
            _ => None,
        }
    }
}

/// An HTTPS or TLS Gateway server.
pub struct GatewayServer {
    /// Istio's name for its route table, `https.443.NAME.GATEWAY.NAMESPACE`.
    pub name: Arc<str>,
    /// The server names it takes, lower case: exact, `*.suffix` or `*`.
    pub hosts: Vec<String>,
    pub tls: ServerTls,
    pub serves: Serves,
    /// `Gateway ns/name`, for logs and the config dump.
    pub gateway: String,
}

/// What a server does with a connection's TLS.
pub enum ServerTls {
    /// `PASSTHROUGH`: routed by SNI as it came.
    Passthrough,
    /// `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL`: terminated with this server config.
    Terminate {
        config: Arc<rustls::ServerConfig>,
        /// `SIMPLE`, `MUTUAL`…, and where the credential came from.
        mode: String,
        credential: String,
    },
    /// `ISTIO_MUTUAL`: terminated with the proxy's mesh certificate.
    Mesh,
    /// The credential cannot be had (a Secret missing or not PEM): handshakes are refused,
    /// and this says why.
    Unavailable(String),
}

/// What a server carries once its TLS is handled.
pub enum Serves {
    Http(RouteConfig),
    /// Terminated TLS carrying TCP: the first `tcp` route bound.
    Tcp(Option<WeightedClusters>),
    /// Passthrough: the bound `tls` routes, by SNI.
    Tls(Vec<TlsRoute>),
}

/// TCP routes for one service port; an empty list means the service's own cluster.
pub struct L4Routes {
    pub routes: Vec<L4Route>,
}

pub struct L4Route {
    pub port: Option<u16>,
    pub destination_subnets: Vec<IpNet>,
    pub clusters: WeightedClusters,
}

impl L4Routes {
    pub fn find(&self, dst: Option<SocketAddr>) -> Option<&WeightedClusters> {
        self.routes
            .iter()
            .find(|r| {
                r.port.is_none_or(|p| dst.is_some_and(|d| d.port() == p))
                    && (r.destination_subnets.is_empty()
                        || dst.is_some_and(|d| {
                            r.destination_subnets.iter().any(|n| n.contains(&d.ip()))
                        }))
            })
            .map(|r| &r.clusters)
    }
}

pub struct TlsRoute {
    /// SNI names, exact or `*.suffix`.
    pub sni_hosts: Vec<String>,
    pub destination_subnets: Vec<IpNet>,
    pub clusters: WeightedClusters,
}

impl TlsRoute {
    pub fn matches(&self, sni: &str, dst: Option<SocketAddr>) -> bool {
        self.sni_hosts
            .iter()
            .any(|h| weft_api::host::wildcard_matches(h, sni))
            && (self.destination_subnets.is_empty()
                || dst
                    .is_some_and(|d| self.destination_subnets.iter().any(|n| n.contains(&d.ip()))))
    }
}

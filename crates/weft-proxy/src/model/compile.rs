//! Resources → [`Snapshot`] for one workload. Everything that depends only on config and on
//! who the proxy is (sourceLabels, sourceNamespace, gateways) is decided here, once per
//! version, so the request path only evaluates request-dependent conditions.

use super::gateway::{self, Binding};
use super::matcher::{RequestMatch, DEFAULT_REGEX_SIZE_LIMIT};
use super::protocol::Protocol;
use super::registry::{Registry, ServiceInfo};
use super::route::*;
use super::secrets::Secrets;
use super::{L4Route, L4Routes, RouteConfig, Snapshot, TlsRoute, VirtualHost};
use crate::security::authz::Authz;
use crate::security::ext_authz::Provider;
use crate::security::jwt::RequestAuthn;
use crate::upstream::config::{
    effective_policy, effective_tls, EndpointConfig, MeshPeer, OriginateTls, SecretTls,
    UpstreamTls, TLS_MODE_LABEL,
};
use crate::upstream::{Cluster, ClusterConfig};
use crate::workload::Workload;
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use weft_api::destination_rules::{self, MergedRule};
use weft_api::peer_authentication;
use weft_api::types::{self, OutboundTrafficMode};
use weft_api::{host, scope, Resource, Spec};

/// Compiles `resources` for `workload`, reusing unchanged clusters from `previous`.
pub fn compile(
    resources: Vec<Resource>,
    workload: &Workload,
    outbound_policy: OutboundTrafficMode,
    version: u64,
    previous: &BTreeMap<String, Arc<Cluster>>,
) -> Result<Snapshot, String> {
    compile_within(
        resources,
        workload,
        outbound_policy,
        version,
        previous,
        DEFAULT_REGEX_SIZE_LIMIT,
    )
}

/// [`compile`], refusing regexes that compile to more than `regex_size_limit` bytes.
pub fn compile_within(
    resources: Vec<Resource>,
    workload: &Workload,
    outbound_policy: OutboundTrafficMode,
    version: u64,
    previous: &BTreeMap<String, Arc<Cluster>>,
    regex_size_limit: usize,
) -> Result<Snapshot, String> {
    let in_scope: Vec<Resource> = last_definitions(&resources)
        .filter(|r| scope::exported_to(r, &workload.namespace))
        .cloned()
        .collect();
    let telemetry = crate::telemetry::policy::resolve(&in_scope, workload)?;
    let server = server_header(&in_scope)?;
    let outbound_policy = sidecar_policy(&in_scope, workload)
        .or(telemetry.outbound_policy)
        .unwrap_or(outbound_policy);
    let registry = Registry::build(&in_scope);
    let peer_authentications: Vec<&Resource> = in_scope
        .iter()
        .filter(|r| r.kind == weft_api::Kind::PeerAuthentication)
        .collect();
    let inbound_mtls = peer_authentication::effective(
        peer_authentications.iter().copied(),
        &workload.namespace,
        &workload.labels,
    );
    let mut c = Compiler {
        peer_authentications: &peer_authentications,
        registry: &registry,
        workload,
        previous,
        destination_rules: destination_rules::merge(in_scope.iter().filter(|r| match &r.spec {
            Spec::DestinationRule(dr) => {
                dr.selects(r.namespace(), &workload.namespace, &workload.labels)
            }
            _ => false,
        })),
        secrets: Secrets {
            resources: &in_scope,
            namespace: &workload.namespace,
        },
        gateway: in_scope.iter().any(|r| {
            matches!(&r.spec, Spec::Gateway(g) if types::labels_match(&g.selector, &workload.labels))
        }),
        clusters: BTreeMap::new(),
        regex_size_limit,
        auto_mtls: scope::mesh_config(&in_scope)
            .and_then(|m| m.enable_auto_mtls)
            .unwrap_or(true),
        trust_domain: scope::mesh_config(&in_scope)
            .and_then(|m| m.trust_domain.clone())
            .unwrap_or_else(|| weft_security::DEFAULT_TRUST_DOMAIN.into()),
    };
    let mut http: HashMap<u16, RouteConfig> = HashMap::new();
    let mut tcp = HashMap::new();
    let mut tls: HashMap<u16, Vec<TlsRoute>> = HashMap::new();
    let virtual_services: Vec<(&Resource, &types::VirtualService)> = in_scope
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) if Binding::Mesh.binds(&vs.gateways, r.namespace()) => {
                Some((r, vs))
            }
            _ => None,
        })
        .collect();
    for svc in &registry.services {
        let bound = virtual_services.iter().find(|(r, vs)| {
            vs.hosts
                .iter()
                .any(|h| host::wildcard_matches(&host::fqdn(h, r.namespace()), &svc.hostname))
        });
        for port in &svc.ports {
            if port.protocol.is_http() || port.protocol == Protocol::Unknown {
                let (routes, vs_name) = match bound {
                    Some((r, vs)) if !vs.http.is_empty() => (
                        c.http_routes(r, vs, &svc.hostname, port.number, Binding::Mesh)?,
                        Some(r.display_name()),
                    ),
                    _ => (vec![c.default_route(&svc.hostname, port.number)], None),
                };
                let table = http.entry(port.number).or_insert_with(|| RouteConfig {
                    port: port.number,
                    ..Default::default()
                });
                table.add(VirtualHost {
                    name: format!("{}:{}", svc.hostname, port.number),
                    domains: domains(svc, port.number, &workload.namespace),
                    routes,
                    virtual_service: vs_name,
                    require_tls: false,
                });
            }
            if !port.protocol.is_http() {
                let routes = match bound {
                    Some((r, vs)) => c.tcp_routes(r, vs, port.number, Binding::Mesh)?,
                    None => Vec::new(),
                };
                let default = c.cluster(&svc.hostname, port.number, None);
                let mut routes = routes;
                routes.push(L4Route {
                    port: None,
                    destination_subnets: Vec::new(),
                    clusters: WeightedClusters::new(vec![WeightedCluster::to(default, 1)]),
                });
                tcp.insert((svc.hostname.clone(), port.number), L4Routes { routes });
            }
            if port.protocol == Protocol::Tls {
                let default = c.cluster(&svc.hostname, port.number, None);
                tls.entry(port.number).or_default().push(TlsRoute {
                    sni_hosts: vec![svc.hostname.clone()],
                    destination_subnets: Vec::new(),
                    clusters: WeightedClusters::new(vec![WeightedCluster::to(default, 1)]),
                });
            }
        }
    }
    for (r, vs) in &virtual_services {
        for (port, route) in c.tls_routes(r, vs, Binding::Mesh, None)? {
            tls.entry(port).or_default().push(route);
        }
    }
    // VirtualService tls routes take precedence over the per-service defaults.
    for routes in tls.values_mut() {
        routes
            .sort_by_key(|r| r.sni_hosts.len() == 1 && registry.by_host(&r.sni_hosts[0]).is_some());
    }
    let mut authz = Authz::compile(&in_scope, &workload.namespace, &workload.labels);
    let mesh = scope::mesh_config(&in_scope);
    for name in authz.provider_names() {
        let provider = Provider::resolve(&name, mesh, |host, port| c.cluster(host, port, None));
        authz.resolve(name, provider);
    }
    let gateway_ports = gateway::ports(&mut c, &in_scope, &workload.labels, &workload.namespace)?;
    Ok(Snapshot {
        version,
        workload: workload.clone(),
        outbound_policy,
        http,
        tcp,
        tls,
        gateway_ports,
        clusters: c.clusters,
        registry,
        resources,
        telemetry,
        inbound_mtls,
        authz,
        request_authn: RequestAuthn::compile(&in_scope, &workload.namespace, &workload.labels),
        server,
    })
}

/// MeshConfig's `defaultConfig.proxyHeaders.server`, when it says anything.
fn server_header(resources: &[Resource]) -> Result<Option<Option<crate::ServerNames>>, String> {
    let setting = scope::mesh_config(resources).and_then(|m| {
        m.default_config
            .as_ref()?
            .proxy_headers
            .as_ref()?
            .server
            .as_ref()
    });
    let Some(setting) = setting else {
        return Ok(None);
    };
    crate::ServerHeader {
        disabled: setting.disabled.unwrap_or(false),
        value: setting.value.clone(),
    }
    .names()
    .map(Some)
    .map_err(|e| format!("MeshConfig defaultConfig.proxyHeaders.server: {e}"))
}

/// A kind, namespace and name defined twice means one object, the later definition, as
/// `kubectl apply` and Istio's file source read a directory.
fn last_definitions(resources: &[Resource]) -> impl Iterator<Item = &Resource> {
    let mut last = HashMap::new();
    for (i, r) in resources.iter().enumerate() {
        last.insert((r.kind, r.namespace(), r.name()), i);
    }
    resources
        .iter()
        .enumerate()
        .filter(move |(i, r)| last.get(&(r.kind, r.namespace(), r.name())) == Some(i))
        .map(|(_, r)| r)
}

/// `outboundTrafficPolicy` from the Sidecar that applies to this workload.
fn sidecar_policy(resources: &[Resource], workload: &Workload) -> Option<OutboundTrafficMode> {
    scope::applicable_sidecar(resources, &workload.namespace, &workload.labels)
        .and_then(|(_, sc)| sc.outbound_traffic_policy.as_ref())
        .map(|p| p.mode)
}

/// The names callers may use: short and long forms, with and without the port, and VIPs.
fn domains(svc: &ServiceInfo, port: u16, caller_namespace: &str) -> Vec<String> {
    let mut names = host::aliases(&svc.hostname, caller_namespace);
    names.extend(
        svc.vips
            .iter()
            .filter(|n| n.prefix_len() == n.max_prefix_len())
            .map(|n| n.addr().to_string()),
    );
    let with_port: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    names.extend(with_port);
    names
}

pub(super) struct Compiler<'a> {
    registry: &'a Registry,
    workload: &'a Workload,
    previous: &'a BTreeMap<String, Arc<Cluster>>,
    /// Merged per (namespace, host) as Istio merges them.
    destination_rules: Vec<MergedRule<'a>>,
    clusters: BTreeMap<String, Arc<Cluster>>,
    regex_size_limit: usize,
    /// MeshConfig `enableAutoMtls`.
    auto_mtls: bool,
    /// MeshConfig `trustDomain`, which names the destinations' identities.
    trust_domain: String,
    /// Every namespace's, for whether a destination endpoint takes mTLS.
    peer_authentications: &'a [&'a Resource],
    /// The proxy's own namespace's, which `credentialName`s name.
    secrets: Secrets<'a>,
    /// Whether Gateways select this proxy, which makes it read a DestinationRule's
    /// `credentialName` even without a `workloadSelector`.
    gateway: bool,
}

impl<'a> Compiler<'a> {
    fn default_route(&mut self, hostname: &str, port: u16) -> Route {
        let cluster = self.cluster(hostname, port, None);
        Route {
            name: Some("default".into()),
            id: Arc::new(RouteId::new(hostname, None, "default")),
            matches: Vec::new(),
            action: Action::Forward(WeightedClusters::new(vec![WeightedCluster::to(cluster, 1)])),
            timeout: None,
            retry: RetryPolicy::istio_default(),
            fault: None,
            mirrors: Vec::new(),
            cors: None,
            headers: HeaderOps::default(),
            rewrite: None,
        }
    }

    /// True when a match's workload conditions (sourceLabels, sourceNamespace, gateways)
    /// hold for this proxy where the routes are bound.
    fn applies(
        &self,
        binding: Binding<'_>,
        r: &Resource,
        labels: &BTreeMap<String, String>,
        ns: Option<&String>,
        gateways: &[String],
    ) -> bool {
        types::labels_match(labels, &self.workload.labels)
            && ns.is_none_or(|n| *n == self.workload.namespace)
            && binding.admits(gateways, r.namespace())
    }

    pub(super) fn http_routes(
        &mut self,
        r: &Resource,
        vs: &types::VirtualService,
        host: &str,
        port: u16,
        binding: Binding<'_>,
    ) -> Result<Vec<Route>, String> {
        let mut routes = Vec::new();
        for (i, h) in vs.http.iter().enumerate() {
            let at = |what: &str| format!("{}: spec.http[{i}]{what}", r.display_name());
            let applicable: Vec<&types::HttpMatchRequest> = h
                .matches
                .iter()
                .filter(|m| {
                    self.applies(
                        binding,
                        r,
                        &m.source_labels,
                        m.source_namespace.as_ref(),
                        &m.gateways,
                    )
                })
                .collect();
            if !h.matches.is_empty() && applicable.is_empty() {
                continue;
            }
            let matches = applicable
                .into_iter()
                .map(|m| RequestMatch::compile(m, self.regex_size_limit))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", at(".match")))?;
            let action = if let Some(redirect) = &h.redirect {
                Action::Redirect(Redirect::from_api(redirect, port))
            } else if let Some(direct) = &h.direct_response {
                Action::Direct {
                    status: StatusCode::from_u16(direct.status as u16)
                        .map_err(|_| at(".directResponse.status: invalid status"))?,
                    body: direct_body(direct.body.as_ref())
                        .map_err(|e| format!("{}: {e}", at(".directResponse.body")))?,
                }
            } else {
                let route_authority = h
                    .rewrite
                    .as_ref()
                    .and_then(|rw| rw.authority.as_deref())
                    .filter(|a| !a.is_empty())
                    .and_then(|a| http::HeaderValue::from_str(a).ok())
                    .or_else(|| HeaderOps::authority(h.headers.as_ref()));
                let mut clusters = Vec::new();
                for d in &h.route {
                    let Some(dest) = &d.destination else { continue };
                    clusters.push(WeightedCluster {
                        cluster: self.destination(r, dest, port),
                        // A lone destination may omit its weight.
                        weight: d
                            .weight
                            .map_or(if h.route.len() == 1 { 100 } else { 0 }, |w| {
                                w.max(0) as u32
                            }),
                        headers: HeaderOps::from_api(d.headers.as_ref()),
                        authority: route_authority
                            .clone()
                            .or_else(|| HeaderOps::authority(d.headers.as_ref())),
                    });
                }
                if clusters.is_empty() {
                    return Err(format!(
                        "{}: a route needs a destination, redirect or directResponse",
                        at("")
                    ));
                }
                Action::Forward(WeightedClusters::new(clusters))
            };
            // Istio's defaults: 100 % when no percentage is given; an explicit 0 mirrors
            // nothing, so it is left out.
            let legacy = h.mirror.as_ref().map(|m| {
                let percent = h
                    .mirror_percentage
                    .map(|p| p.value)
                    .or(h.mirror_percent.map(f64::from))
                    .unwrap_or(100.0);
                (m, percent)
            });
            let listed = h.mirrors.iter().filter_map(|m| {
                Some((
                    m.destination.as_ref()?,
                    m.percentage.map_or(100.0, |p| p.value),
                ))
            });
            let mirrors = legacy
                .into_iter()
                .chain(listed)
                .filter(|(_, percent)| *percent > 0.0)
                .map(|(dest, percent)| Mirror {
                    cluster: self.destination(r, dest, port),
                    percent,
                })
                .collect();
            let label = h.name.clone().unwrap_or_else(|| format!("http[{i}]"));
            routes.push(Route {
                name: h.name.clone(),
                id: Arc::new(RouteId::new(host, Some((r.namespace(), r.name())), &label)),
                matches,
                action,
                timeout: h.timeout.map(|t| t.as_std()).filter(|t| !t.is_zero()),
                retry: RetryPolicy::from_api(h.retries.as_ref()),
                fault: h.fault.as_ref().and_then(Fault::from_api),
                mirrors,
                cors: h.cors_policy.as_ref().map(Cors::from_api),
                headers: HeaderOps::from_api(h.headers.as_ref()),
                rewrite: h
                    .rewrite
                    .as_ref()
                    .map(Rewrite::from_api)
                    .transpose()
                    .map_err(|e| format!("{}: {e}", at(".rewrite")))?,
            });
        }
        Ok(routes)
    }

    fn weighted(
        &mut self,
        r: &Resource,
        route: &[types::RouteDestination],
        port: u16,
    ) -> WeightedClusters {
        let lone = route.len() == 1;
        WeightedClusters::new(
            route
                .iter()
                .filter_map(|d| Some((d.destination.as_ref()?, d.weight)))
                .map(|(dest, weight)| {
                    WeightedCluster::to(
                        self.destination(r, dest, port),
                        weight.map_or(if lone { 100 } else { 0 }, |w| w.max(0) as u32),
                    )
                })
                .collect(),
        )
    }

    pub(super) fn tcp_routes(
        &mut self,
        r: &Resource,
        vs: &types::VirtualService,
        port: u16,
        binding: Binding<'_>,
    ) -> Result<Vec<L4Route>, String> {
        let mut out = Vec::new();
        for t in &vs.tcp {
            let clusters = self.weighted(r, &t.route, port);
            if clusters.clusters.is_empty() {
                continue;
            }
            let matches: Vec<&types::L4MatchAttributes> = t
                .matches
                .iter()
                .filter(|m| {
                    self.applies(
                        binding,
                        r,
                        &m.source_labels,
                        m.source_namespace.as_ref(),
                        &m.gateways,
                    )
                })
                .collect();
            if !t.matches.is_empty() && matches.is_empty() {
                continue;
            }
            if matches.is_empty() {
                out.push(L4Route {
                    port: None,
                    destination_subnets: Vec::new(),
                    clusters,
                });
                continue;
            }
            for m in matches {
                out.push(L4Route {
                    port: m.port.and_then(|p| u16::try_from(p).ok()),
                    destination_subnets: subnets(&m.destination_subnets)?,
                    clusters: self.weighted(r, &t.route, port),
                });
            }
        }
        Ok(out)
    }

    /// A VirtualService's `tls` routes, with the port each is for. On a gateway's `port`,
    /// only the matches for it or for no port; on sidecars, a match without a port is for
    /// 443.
    pub(super) fn tls_routes(
        &mut self,
        r: &Resource,
        vs: &types::VirtualService,
        binding: Binding<'_>,
        on_port: Option<u16>,
    ) -> Result<Vec<(u16, TlsRoute)>, String> {
        let mut out = Vec::new();
        for t in &vs.tls {
            for m in &t.matches {
                let matched = m.port.and_then(|p| u16::try_from(p).ok());
                let port = match (on_port, matched) {
                    (Some(on), Some(p)) if p != on => continue,
                    (_, Some(p)) => p,
                    (Some(on), None) => on,
                    (None, None) => 443,
                };
                if !self.applies(
                    binding,
                    r,
                    &m.source_labels,
                    m.source_namespace.as_ref(),
                    &m.gateways,
                ) {
                    continue;
                }
                let clusters = self.weighted(r, &t.route, port);
                if clusters.clusters.is_empty() {
                    continue;
                }
                let route = TlsRoute {
                    sni_hosts: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    destination_subnets: subnets(&m.destination_subnets)?,
                    clusters,
                };
                out.push((port, route));
            }
        }
        Ok(out)
    }

    /// The cluster for a route destination: its host resolved against the VirtualService's
    /// namespace, its port explicit, else the caller's port if the service has it, else the
    /// service's only port.
    fn destination(&mut self, r: &Resource, dest: &types::Destination, port: u16) -> Arc<Cluster> {
        let hostname = host::fqdn(&dest.host, r.namespace());
        let port = dest
            .port
            .and_then(|p| u16::try_from(p.number).ok())
            .filter(|p| *p != 0)
            .unwrap_or_else(|| match self.registry.by_host(&hostname) {
                Some(svc) if svc.port(port).is_none() && svc.ports.len() == 1 => {
                    svc.ports[0].number
                }
                _ => port,
            });
        self.cluster(&hostname, port, dest.subset.as_deref())
    }

    fn merged_rule(&self, hostname: &str) -> Option<&MergedRule<'a>> {
        destination_rules::in_force(&self.destination_rules, hostname, &self.workload.namespace)
    }

    fn cluster(&mut self, hostname: &str, port: u16, subset: Option<&str>) -> Arc<Cluster> {
        let name = ClusterConfig::istio_name("outbound", port, subset, hostname);
        if let Some(c) = self.clusters.get(&name) {
            return c.clone();
        }
        let config = self.cluster_config(name.clone(), hostname, port, subset);
        let cluster = match self.previous.get(&name) {
            Some(old) if old.config == config => old.clone(),
            old => Arc::new(Cluster::new(config, old.map(|c| c.as_ref()))),
        };
        self.clusters.insert(name, cluster.clone());
        cluster
    }

    fn cluster_config(
        &self,
        name: String,
        hostname: &str,
        port: u16,
        subset: Option<&str>,
    ) -> ClusterConfig {
        let svc = self.registry.by_host(hostname);
        let merged = self.merged_rule(hostname);
        let rule = merged.map(|m| &m.rule);
        let subset_def =
            subset.and_then(|s| rule.and_then(|dr| dr.subsets.iter().find(|d| d.name == s)));
        let rule_policy = rule.and_then(|dr| dr.traffic_policy.as_ref());
        let subset_policy = subset_def.and_then(|s| s.traffic_policy.as_ref());
        let (lb, limits, outlier) = effective_policy(rule_policy, subset_policy, port);
        let tls = self.upstream_tls(
            svc,
            hostname,
            port,
            subset,
            effective_tls(rule_policy, subset_policy, port),
        );
        let service_port = svc.and_then(|s| s.port(port));
        let unusable = match (svc, service_port, subset, subset_def) {
            (None, _, _, _) => Some(format!(
                "{hostname} is not a known service: declare it with a Kubernetes Service or a ServiceEntry"
            )),
            (Some(s), None, _, _) => Some(format!(
                "{hostname} has no port {port} ({} declares {})",
                s.declared_by,
                s.ports.iter().map(|p| p.number.to_string()).collect::<Vec<_>>().join(", ")
            )),
            (_, _, Some(sub), None) => Some(format!(
                "subset {sub:?} of {hostname} is not defined by any DestinationRule (istioctl analyze: IST0101)"
            )),
            _ => tls.as_ref().err().cloned(),
        };
        let endpoints = match (svc, service_port) {
            (Some(svc), Some(sp)) if unusable.is_none() => svc
                .endpoints
                .iter()
                .filter(|e| subset_def.is_none_or(|s| types::labels_match(&s.labels, &e.labels)))
                .map(|e| {
                    let port = e.port_for(sp);
                    EndpointConfig {
                        address: e.address.clone(),
                        port,
                        mtls_ready: self.mtls_ready(svc, e, port),
                        labels: e.labels.clone(),
                        declared_by: e.declared_by.clone(),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        ClusterConfig {
            name,
            service: hostname.to_string(),
            port,
            subset: subset.map(str::to_string),
            protocol: service_port.map_or(Protocol::Unknown, |p| p.protocol),
            discovery: svc.map_or(super::registry::Discovery::Static, |s| s.discovery),
            mesh_internal: svc.is_some_and(|s| !s.external),
            endpoints,
            lb,
            limits,
            outlier,
            destination_rules: merged.map(MergedRule::names).unwrap_or_default(),
            unusable,
            tls: tls.unwrap_or(UpstreamTls::Plaintext),
        }
    }

    /// A DestinationRule's `tls` for the cluster, else Istio's auto mTLS to mesh services.
    fn upstream_tls(
        &self,
        svc: Option<&ServiceInfo>,
        hostname: &str,
        port: u16,
        subset: Option<&str>,
        settings: Option<&types::ClientTlsSettings>,
    ) -> Result<UpstreamTls, String> {
        let mesh_peer = |settings: Option<&types::ClientTlsSettings>| MeshPeer {
            sni: settings
                .and_then(|s| s.sni.clone())
                .unwrap_or_else(|| MeshPeer::sni(port, subset, hostname)),
            identities: match settings.map(|s| &s.subject_alt_names) {
                Some(names) if !names.is_empty() => names.clone(),
                _ => svc
                    .map(|s| s.identities(&self.trust_domain))
                    .unwrap_or_default(),
            },
        };
        let Some(settings) = settings else {
            return Ok(match svc {
                Some(svc) if self.auto_mtls && !svc.external => {
                    UpstreamTls::AutoMutual(mesh_peer(None))
                }
                _ => UpstreamTls::Plaintext,
            });
        };
        // The proto's default mode is DISABLE: `tls` without a mode turns TLS off.
        let mode = settings.mode.as_deref().unwrap_or("DISABLE");
        Ok(match mode {
            "ISTIO_MUTUAL" => UpstreamTls::IstioMutual(mesh_peer(Some(settings))),
            "SIMPLE" | "MUTUAL" => {
                let path = |p: &Option<String>| {
                    p.as_deref()
                        .filter(|p| !p.is_empty())
                        .map(std::path::PathBuf::from)
                };
                UpstreamTls::Originate(OriginateTls {
                    sni: settings.sni.clone().unwrap_or_else(|| hostname.to_string()),
                    subject_alt_names: settings.subject_alt_names.clone(),
                    ca_certificates: path(&settings.ca_certificates),
                    client_certificate: match (
                        mode,
                        path(&settings.client_certificate),
                        path(&settings.private_key),
                    ) {
                        ("MUTUAL", Some(cert), Some(key)) => Some((cert, key)),
                        _ => None,
                    },
                    credential: self.client_credential(hostname, mode, settings)?,
                    insecure_skip_verify: settings.insecure_skip_verify == Some(true),
                })
            }
            _ => UpstreamTls::Plaintext,
        })
    }

    /// `credentialName`'s Secret, which Istio reads on gateways, and on sidecars only when
    /// the rule has a `workloadSelector` (without one, a sidecar keeps to the files).
    fn client_credential(
        &self,
        hostname: &str,
        mode: &str,
        settings: &types::ClientTlsSettings,
    ) -> Result<Option<SecretTls>, String> {
        let Some(name) = settings.credential() else {
            return Ok(None);
        };
        let selected = self
            .merged_rule(hostname)
            .is_some_and(|m| m.rule.workload_selector.is_some());
        if !self.gateway && !selected {
            return Ok(None);
        }
        let namespace = self.secrets.namespace;
        let found = self
            .secrets
            .credential(
                name,
                &format!("{name}-cacert"),
                false,
                &format!("weft create secret generic {name} -n {namespace} --from-file=tls.crt=FILE --from-file=tls.key=FILE --from-file=ca.crt=FILE"),
            )
            .map_err(|why| format!("{hostname}: DestinationRule tls.{why}"))?;
        let client = match (mode, found.chain, found.key) {
            ("MUTUAL", Some(chain), Some(key)) => Some((chain, key)),
            ("MUTUAL", _, _) => {
                return Err(format!(
                    "{hostname}: DestinationRule tls.credentialName: {} has no tls.crt and tls.key (nor cert and key) for MUTUAL to present",
                    found.from
                ))
            }
            _ => None,
        };
        Ok(Some(SecretTls {
            from: found.from,
            ca_pem: found.ca,
            client,
        }))
    }
}

impl Compiler<'_> {
    /// Istio's auto mTLS reads an endpoint as taking mTLS when it has a sidecar (the
    /// injector's `security.istio.io/tlsMode: istio` label) and no PeerAuthentication
    /// disables mTLS on the port it serves.
    fn mtls_ready(&self, svc: &ServiceInfo, e: &super::registry::EndpointInfo, port: u16) -> bool {
        e.labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio")
            && peer_authentication::effective(
                self.peer_authentications.iter().copied(),
                &svc.namespace,
                &e.labels,
            )
            .for_port(port)
            .mode
                != types::MtlsMode::Disable
    }
}

fn subnets(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("invalid destinationSubnets entry {s:?}"))
        })
        .collect()
}

fn direct_body(body: Option<&types::HttpBody>) -> Result<Bytes, String> {
    match body {
        None => Ok(Bytes::new()),
        Some(types::HttpBody {
            string: Some(s), ..
        }) => Ok(Bytes::from(s.clone())),
        Some(types::HttpBody { bytes: Some(b), .. }) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .map_err(|e| format!("body.bytes is not base64: {e}")),
        Some(_) => Ok(Bytes::new()),
    }
}

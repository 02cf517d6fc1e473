//! The service registry: services from Kubernetes `Service` objects and ServiceEntries,
//! endpoints from WorkloadEntries and ServiceEntry endpoints.

use super::protocol::Protocol;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use weft_api::types::{self, Resolution, TargetPort};
use weft_api::{host, Resource, Spec};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    /// Kubernetes `targetPort` / ServiceEntry `targetPort` when numeric.
    pub target_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointInfo {
    /// An IP address, or a DNS name for `resolution: DNS`.
    pub address: String,
    pub ports: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    /// Where the endpoint was declared (`WorkloadEntry default/reviews-v1`), for messages.
    pub declared_by: String,
}

impl EndpointInfo {
    /// The port this endpoint serves a service port on.
    pub fn port_for(&self, port: &ServicePort) -> u16 {
        self.ports
            .get(&port.name)
            .and_then(|p| u16::try_from(*p).ok())
            .or(port.target_port)
            .unwrap_or(port.number)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Discovery {
    /// Endpoints are IP addresses.
    Static,
    /// Endpoint addresses (or the host itself) are resolved by DNS at connect time.
    Dns,
    /// No endpoints: the caller's original destination is used (`resolution: NONE`).
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceInfo {
    pub hostname: String,
    pub namespace: String,
    pub vips: Vec<IpNet>,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<EndpointInfo>,
    pub discovery: Discovery,
    pub external: bool,
    /// `Service default/reviews` or `ServiceEntry default/httpbin`.
    pub declared_by: String,
    /// Declared by a Kubernetes Service, which wins its hostname over ServiceEntries.
    pub kubernetes: bool,
}

impl ServiceInfo {
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The SPIFFE IDs of the service's workloads, by their service accounts, as Istio
    /// checks a destination's certificate. Empty when an endpoint names no service account:
    /// then any workload of the trust domain is accepted.
    pub fn identities(&self, trust_domain: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for e in &self.endpoints {
            let Some(sa) = e.service_account.as_deref().filter(|sa| !sa.is_empty()) else {
                return Vec::new();
            };
            let id = format!("spiffe://{trust_domain}/ns/{}/sa/{sa}", self.namespace);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.sort();
        ids
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Registry {
    pub services: Vec<ServiceInfo>,
    #[serde(skip)]
    by_host: HashMap<String, usize>,
    /// (service, endpoint) by endpoint address, the first service declaring it.
    #[serde(skip)]
    by_endpoint: HashMap<String, (usize, usize)>,
    /// WorkloadEntries no service selects (a client without a Service), by address: still
    /// callers a destination names by their address.
    #[serde(skip)]
    unserved: HashMap<String, EndpointInfo>,
}

impl Registry {
    pub fn build(resources: &[Resource]) -> Registry {
        let workload_entries: Vec<(&Resource, &types::WorkloadEntry)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::WorkloadEntry(we) => Some((r, we)),
                _ => None,
            })
            .collect();
        let selected =
            |namespace: &str, selector: &BTreeMap<String, String>| -> Vec<EndpointInfo> {
                workload_entries
                    .iter()
                    .filter(|(r, we)| {
                        r.namespace() == namespace && types::labels_match(selector, &we.labels)
                    })
                    .map(|(r, we)| endpoint(we, r.display_name()))
                    .collect()
            };
        let mut services = Vec::new();
        for r in resources {
            match &r.spec {
                Spec::Service(svc) => services.push(kube_service(r, svc, &selected)),
                Spec::ServiceEntry(se) => services.extend(service_entry(r, se, &selected)),
                _ => {}
            }
        }
        let mut registry = Registry {
            services,
            by_host: HashMap::new(),
            by_endpoint: HashMap::new(),
            unserved: HashMap::new(),
        };
        for (i, s) in registry.services.iter().enumerate() {
            // The first declaration of a hostname keeps it, but a Kubernetes Service takes it
            // from ServiceEntries, as Istio keeps one from "domain squatting" on it.
            let held = registry.by_host.entry(s.hostname.clone()).or_insert(i);
            if s.kubernetes && !registry.services[*held].kubernetes {
                *held = i;
            }
            for (j, e) in s.endpoints.iter().enumerate() {
                registry
                    .by_endpoint
                    .entry(e.address.clone())
                    .or_insert((i, j));
            }
        }
        for (r, we) in &workload_entries {
            if !registry.by_endpoint.contains_key(&we.address) {
                registry
                    .unserved
                    .entry(we.address.clone())
                    .or_insert_with(|| endpoint(we, r.display_name()));
            }
        }
        registry
    }

    pub fn by_host(&self, fqdn: &str) -> Option<&ServiceInfo> {
        self.by_host.get(fqdn).map(|&i| &self.services[i])
    }

    /// The workload at `address`, whether or not a service selects it.
    pub fn workload_at(&self, address: &str) -> Option<&EndpointInfo> {
        self.endpoint_at(address)
            .map(|(_, e)| e)
            .or_else(|| self.unserved.get(address))
    }

    /// The service (host and service port) that `workload` serves on its `port`: one whose
    /// endpoints include the workload (by its address, else by its labels) on that port.
    pub fn serving(&self, workload: &crate::workload::Workload, port: u16) -> Option<(&str, u16)> {
        let is_workload = |e: &EndpointInfo| {
            if workload.instance_ip.is_empty() {
                !workload.labels.is_empty() && e.labels == workload.labels
            } else {
                e.address == workload.instance_ip
            }
        };
        self.services
            .iter()
            .filter(|s| !s.external && s.namespace == workload.namespace)
            .find_map(|s| {
                s.ports.iter().find_map(|p| {
                    s.endpoints
                        .iter()
                        .any(|e| is_workload(e) && e.port_for(p) == port)
                        .then_some((s.hostname.as_str(), p.number))
                })
            })
    }

    /// The first service with an endpoint at `address`, and that endpoint.
    pub fn endpoint_at(&self, address: &str) -> Option<(&ServiceInfo, &EndpointInfo)> {
        let &(s, e) = self.by_endpoint.get(address)?;
        let service = &self.services[s];
        Some((service, &service.endpoints[e]))
    }

    /// The service whose address (or CIDR) holds `ip` and that has `port`.
    pub fn by_address(&self, ip: IpAddr, port: u16) -> Option<&ServiceInfo> {
        self.services
            .iter()
            .filter(|s| s.port(port).is_some() && s.vips.iter().any(|net| net.contains(&ip)))
            .max_by_key(|s| s.vips.iter().map(IpNet::prefix_len).max())
    }
}

/// The endpoints in a namespace whose labels a selector matches.
type SelectEndpoints<'a> = &'a dyn Fn(&str, &BTreeMap<String, String>) -> Vec<EndpointInfo>;

fn endpoint(we: &types::WorkloadEntry, declared_by: String) -> EndpointInfo {
    EndpointInfo {
        address: we.address.clone(),
        ports: we.ports.clone(),
        labels: we.labels.clone(),
        service_account: we.service_account.clone(),
        declared_by,
    }
}

fn kube_service(r: &Resource, svc: &types::Service, selected: SelectEndpoints<'_>) -> ServiceInfo {
    let vips = svc
        .cluster_ips
        .iter()
        .chain(svc.cluster_ip.iter())
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(IpNet::from)
        .collect();
    let ports = svc
        .ports
        .iter()
        .map(|p| ServicePort {
            number: p.port as u16,
            name: p.name.clone().unwrap_or_default(),
            protocol: Protocol::for_port(
                p.port as u16,
                p.name.as_deref(),
                p.app_protocol.as_deref(),
            ),
            target_port: match p.target_port {
                Some(TargetPort::Number(n)) => u16::try_from(n).ok(),
                _ => None,
            },
        })
        .collect();
    let endpoints = if svc.selector.is_empty() {
        Vec::new()
    } else {
        selected(r.namespace(), &svc.selector)
    };
    ServiceInfo {
        hostname: host::fqdn(r.name(), r.namespace()),
        namespace: r.namespace().to_string(),
        vips,
        ports,
        endpoints,
        discovery: Discovery::Static,
        external: false,
        declared_by: r.display_name(),
        kubernetes: true,
    }
}

fn service_entry(
    r: &Resource,
    se: &types::ServiceEntry,
    selected: SelectEndpoints<'_>,
) -> Vec<ServiceInfo> {
    let vips: Vec<IpNet> = se
        .addresses
        .iter()
        .filter_map(|a| {
            a.parse::<IpNet>()
                .ok()
                .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect();
    let ports: Vec<ServicePort> = se
        .ports
        .iter()
        .map(|p| ServicePort {
            number: p.number as u16,
            name: p.name.clone(),
            protocol: p
                .protocol
                .as_deref()
                .map(Protocol::from_name)
                .unwrap_or_else(|| Protocol::from_name(&p.name)),
            target_port: p.target_port.and_then(|t| u16::try_from(t).ok()),
        })
        .collect();
    let endpoints: Vec<EndpointInfo> = match &se.workload_selector {
        Some(sel) => selected(r.namespace(), &sel.labels),
        None => se
            .endpoints
            .iter()
            .map(|we| endpoint(we, r.display_name()))
            .collect(),
    };
    let discovery = match se.resolution.unwrap_or(Resolution::None) {
        Resolution::None => Discovery::Passthrough,
        Resolution::Static => Discovery::Static,
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => Discovery::Dns,
    };
    let external = se.location != Some(types::Location::MeshInternal);
    se.hosts
        .iter()
        .map(|h| {
            let hostname = host::fqdn(h, r.namespace());
            // DNS resolution without endpoints resolves the host itself.
            let endpoints =
                if discovery == Discovery::Dns && endpoints.is_empty() && !hostname.contains('*') {
                    vec![EndpointInfo {
                        address: hostname.clone(),
                        ports: BTreeMap::new(),
                        labels: BTreeMap::new(),
                        service_account: None,
                        declared_by: r.display_name(),
                    }]
                } else {
                    endpoints.clone()
                };
            ServiceInfo {
                hostname,
                namespace: r.namespace().to_string(),
                vips: vips.clone(),
                ports: ports.clone(),
                endpoints,
                discovery,
                external,
                declared_by: r.display_name(),
                kubernetes: false,
            }
        })
        .collect()
}

//! From a mesh file to what runs: one pod per Workload replica with an address from the pod
//! range, a service address (VIP) for every Service that has none, and the names each pod
//! resolves. Allocation is a pure function of the file (sorted by namespace and name), so
//! the same file always gets the same addresses.

use crate::mesh::{MeshFile, Workload};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use weft_api::{host, Resource, Spec};

/// Pod addresses, as a Kubernetes pod CIDR; .1 is the bridge (the pods' gateway).
pub const POD_RANGE: &str = "10.44.0.0/16";
/// Service addresses, as Kubernetes' default service CIDR.
pub const SERVICE_RANGE: &str = "10.96.0.0/16";

#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// `<workload>-<replica>`, unique within the namespace.
    pub name: String,
    pub namespace: String,
    pub workload: Workload,
    pub ip: Ipv4Addr,
}

impl Pod {
    /// Lines of the pod's `/etc/hosts`: itself, then every service under the names a pod in
    /// its namespace may use (`svc` only for its own namespace, as DNS search paths allow),
    /// then the external hosts' names, as public DNS would answer them. The control plane
    /// (on `bridge`) answers as istiod and as the mesh's Zipkin, where Istio's proxies look.
    pub fn hosts_file(
        &self,
        bridge: Ipv4Addr,
        services: &[ServiceAddress],
        external: &[ExternalHost],
    ) -> String {
        let mut out = format!(
            "127.0.0.1 localhost\n::1 localhost\n{} {}\n",
            self.ip, self.name
        );
        let control: Vec<String> = ["istiod", "zipkin"]
            .iter()
            .flat_map(|s| {
                host::aliases(
                    &host::fqdn(s, weft_api::scope::ROOT_NAMESPACE),
                    &self.namespace,
                )
            })
            .collect();
        out.push_str(&format!("{bridge} {}\n", control.join(" ")));
        for s in services {
            let names = host::aliases(&host::fqdn(&s.name, &s.namespace), &self.namespace);
            out.push_str(&format!("{} {}\n", s.vip, names.join(" ")));
        }
        for e in external {
            out.push_str(&format!("{} {}\n", e.ip, e.hostnames.join(" ")));
        }
        out
    }
}

/// A pod of a Workload with `hostnames`: every pod resolves those names to its address.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalHost {
    pub ip: Ipv4Addr,
    pub hostnames: Vec<String>,
}

/// A Service port's clusterIP and the pod addresses behind it, as kube-proxy programs them
/// for a pod outside the mesh (mesh pods' sidecars route by the registry instead).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceRoute {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<std::net::SocketAddrV4>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceAddress {
    pub name: String,
    pub namespace: String,
    pub vip: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub bridge_ip: Ipv4Addr,
    pub pod_range: Ipv4Net,
    pub pods: Vec<Pod>,
    pub services: Vec<ServiceAddress>,
    pub external: Vec<ExternalHost>,
    /// The mesh file's config with every Service's `clusterIP` filled in, ready to apply.
    pub resources: Vec<Resource>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{what} do not fit in {range}: split the mesh or use fewer replicas")]
    Exhausted { what: &'static str, range: String },
    #[error("Service {namespace}/{name} asks for clusterIP {ip}, outside {SERVICE_RANGE}")]
    ForeignClusterIp {
        namespace: String,
        name: String,
        ip: String,
    },
}

pub fn plan(mesh: &MeshFile) -> Result<Plan, PlanError> {
    let pod_range: Ipv4Net = POD_RANGE.parse().expect("constant range");
    let service_range: Ipv4Net = SERVICE_RANGE.parse().expect("constant range");
    let mut pod_ips = pod_range.hosts().skip(1); // .1 is the bridge
    let bridge_ip = pod_range.hosts().next().expect("a /16 has hosts");
    let mut workloads: Vec<&Workload> = mesh.workloads.iter().collect();
    workloads.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut pods = Vec::new();
    for w in workloads {
        for replica in 0..w.spec.replicas {
            let ip = pod_ips.next().ok_or(PlanError::Exhausted {
                what: "pods",
                range: POD_RANGE.into(),
            })?;
            pods.push(Pod {
                name: format!("{}-{replica}", w.name),
                namespace: w.namespace.clone(),
                workload: w.clone(),
                ip,
            });
        }
    }
    let external = pods
        .iter()
        .filter(|p| !p.workload.spec.hostnames.is_empty())
        .map(|p| ExternalHost {
            ip: p.ip,
            hostnames: p.workload.spec.hostnames.clone(),
        })
        .collect();
    let (services, resources) = service_addresses(mesh, service_range)?;
    Ok(Plan {
        bridge_ip,
        pod_range,
        pods,
        services,
        external,
        resources,
    })
}

impl Plan {
    /// Every Service port with endpoints: the pods of its namespace whose labels its
    /// selector matches, on its `targetPort` (a number; else the port itself, as a named
    /// target port names the container port Workloads do not declare).
    pub fn service_routes(&self) -> Vec<ServiceRoute> {
        let mut routes = Vec::new();
        for r in &self.resources {
            let Spec::Service(s) = &r.spec else {
                continue;
            };
            let Some(vip) = s.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
                continue;
            };
            if s.selector.is_empty() {
                continue;
            }
            let pods: Vec<Ipv4Addr> = self
                .pods
                .iter()
                .filter(|p| {
                    p.namespace == r.namespace()
                        && weft_api::types::labels_match(&s.selector, &p.workload.spec.labels)
                })
                .map(|p| p.ip)
                .collect();
            for port in &s.ports {
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                let target = match &port.target_port {
                    Some(weft_api::types::TargetPort::Number(n)) => {
                        u16::try_from(*n).unwrap_or(number)
                    }
                    _ => number,
                };
                if !pods.is_empty() {
                    routes.push(ServiceRoute {
                        vip,
                        port: number,
                        endpoints: pods
                            .iter()
                            .map(|ip| std::net::SocketAddrV4::new(*ip, target))
                            .collect(),
                    });
                }
            }
        }
        routes
    }
}

/// Keeps the clusterIPs the file gives and hands out the rest in name order, skipping taken
/// ones.
fn service_addresses(
    mesh: &MeshFile,
    range: Ipv4Net,
) -> Result<(Vec<ServiceAddress>, Vec<Resource>), PlanError> {
    let mut resources = mesh.resources.clone();
    let mut taken: BTreeMap<Ipv4Addr, ()> = BTreeMap::new();
    for r in &resources {
        if let Spec::Service(s) = &r.spec {
            if let Some(ip) = s
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            {
                if !range.contains(&ip) {
                    return Err(PlanError::ForeignClusterIp {
                        namespace: r.namespace().into(),
                        name: r.name().into(),
                        ip: ip.to_string(),
                    });
                }
                taken.insert(ip, ());
            }
        }
    }
    // .1 is the API server's address in Kubernetes; start after it, as kube does.
    let mut free = range.hosts().skip(9).filter(|ip| !taken.contains_key(ip));
    let mut order: Vec<usize> = (0..resources.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |r: &Resource| (r.namespace().to_string(), r.name().to_string());
        key(&resources[a]).cmp(&key(&resources[b]))
    });
    let mut services = Vec::new();
    for i in order {
        let r = &mut resources[i];
        let (name, namespace) = (r.name().to_string(), r.namespace().to_string());
        let Spec::Service(s) = &mut r.spec else {
            continue;
        };
        let vip = match s.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
            Some(ip) => ip,
            None => {
                let ip = free.next().ok_or(PlanError::Exhausted {
                    what: "services",
                    range: SERVICE_RANGE.into(),
                })?;
                s.cluster_ip = Some(ip.to_string());
                ip
            }
        };
        services.push(ServiceAddress {
            name,
            namespace,
            vip,
        });
    }
    Ok((services, resources))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: details}
spec: {selector: {app: details}, clusterIP: 10.96.0.10, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec: {labels: {app: reviews, version: v1}, replicas: 2, command: [sleep, "1"]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: details-v1}
spec: {labels: {app: details, version: v1}, command: [sleep, "1"]}
"#;

    #[test]
    fn service_routes_lead_to_the_selected_pods() {
        let mesh = crate::mesh::parse(MESH, Path::new("mesh.yaml")).unwrap();
        let p = plan(&mesh).unwrap();
        let routes = p.service_routes();
        let reviews = routes
            .iter()
            .find(|r| r.port == 9080 && r.endpoints.len() == 2);
        let pods: Vec<_> = p
            .pods
            .iter()
            .filter(|pod| pod.workload.name == "reviews-v1")
            .map(|pod| std::net::SocketAddrV4::new(pod.ip, 9080))
            .collect();
        assert_eq!(reviews.map(|r| &r.endpoints), Some(&pods));
        let details = routes
            .iter()
            .find(|r| r.vip == "10.96.0.10".parse::<Ipv4Addr>().unwrap())
            .unwrap();
        assert_eq!(details.endpoints.len(), 1);
    }

    #[test]
    fn pods_and_services_get_stable_addresses() {
        let mesh = crate::mesh::parse(MESH, Path::new("mesh.yaml")).unwrap();
        let p = plan(&mesh).unwrap();
        let pods: Vec<(&str, String)> = p
            .pods
            .iter()
            .map(|p| (p.name.as_str(), p.ip.to_string()))
            .collect();
        assert_eq!(
            pods,
            [
                ("details-v1-0", "10.44.0.2".to_string()),
                ("reviews-v1-0", "10.44.0.3".into()),
                ("reviews-v1-1", "10.44.0.4".into())
            ]
        );
        assert_eq!(p.bridge_ip.to_string(), "10.44.0.1");
        // details keeps the address it asked for; reviews gets the first free one.
        let vips: Vec<(&str, String)> = p
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.vip.to_string()))
            .collect();
        assert_eq!(
            vips,
            [
                ("details", "10.96.0.10".to_string()),
                ("reviews", "10.96.0.11".into())
            ]
        );
        let reviews = p.resources.iter().find(|r| r.name() == "reviews").unwrap();
        let Spec::Service(s) = &reviews.spec else {
            unreachable!()
        };
        assert_eq!(s.cluster_ip.as_deref(), Some("10.96.0.11"));
    }

    #[test]
    fn a_pod_resolves_services_by_their_kubernetes_names() {
        let mesh = crate::mesh::parse(MESH, Path::new("mesh.yaml")).unwrap();
        let p = plan(&mesh).unwrap();
        let hosts = p.pods[0].hosts_file(p.bridge_ip, &p.services, &p.external);
        assert!(hosts.contains("10.44.0.2 details-v1-0\n"), "{hosts}");
        assert!(
            hosts.contains("10.96.0.11 reviews.default.svc.cluster.local reviews.default.svc reviews.default reviews\n"),
            "{hosts}"
        );
        let mut elsewhere = p.pods[0].clone();
        elsewhere.namespace = "other".into();
        let hosts = elsewhere.hosts_file(p.bridge_ip, &p.services, &p.external);
        assert!(hosts.contains("reviews.default\n"), "{hosts}");
    }

    #[test]
    fn every_pod_resolves_an_external_hosts_names_to_each_of_its_replicas() {
        let external = r#"
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: api, namespace: external}
spec: {sidecar: false, hostnames: [api.external.test, www.external.test], replicas: 2, command: [sleep, "1"]}
"#;
        let mesh =
            crate::mesh::parse(&format!("{MESH}{external}"), Path::new("mesh.yaml")).unwrap();
        let p = plan(&mesh).unwrap();
        // external/api sorts after default's three pods: its pods are .5 and .6.
        let names = "api.external.test www.external.test";
        for pod in &p.pods {
            let hosts = pod.hosts_file(p.bridge_ip, &p.services, &p.external);
            assert!(
                hosts.ends_with(&format!("10.44.0.5 {names}\n10.44.0.6 {names}\n")),
                "{hosts}"
            );
        }
    }
}

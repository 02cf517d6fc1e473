//! Istio's `Gateway` for a gateway proxy. The Gateways whose `selector` matches the proxy's
//! labels (in any namespace) declare ports; each HTTP server's port gets a route table of
//! virtual hosts from the VirtualServices bound to that Gateway by `gateways:`, with routes
//! compiled exactly as for sidecars and to the same clusters.

use super::compile::Compiler;
use super::protocol::Protocol;
use super::route::Route;
use super::{RouteConfig, VirtualHost};
use std::collections::{BTreeMap, HashMap};
use weft_api::types;
use weft_api::{host, Resource, Spec};

/// Who a VirtualService's routes are compiled for: the sidecars (`mesh`) or one Gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Binding<'a> {
    Mesh,
    Gateway { namespace: &'a str, name: &'a str },
}

impl Binding<'_> {
    /// Whether a VirtualService in `namespace` with these `gateways` applies here: none
    /// means the mesh only.
    pub(super) fn binds(self, gateways: &[String], namespace: &str) -> bool {
        (gateways.is_empty() && self == Binding::Mesh) || self.listed(gateways, namespace)
    }

    /// Whether a `match[].gateways` admits this binding: none keeps the VirtualService's.
    pub(super) fn admits(self, gateways: &[String], namespace: &str) -> bool {
        gateways.is_empty() || self.listed(gateways, namespace)
    }

    /// `mesh`, or the Gateway as `name` (in the VirtualService's namespace) or `ns/name`.
    fn listed(self, gateways: &[String], vs_namespace: &str) -> bool {
        gateways.iter().any(|g| match self {
            Binding::Mesh => g == "mesh",
            Binding::Gateway { namespace, name } => {
                let (ns, n) = g.split_once('/').unwrap_or((vs_namespace, g));
                ns == namespace && n == name
            }
        })
    }
}

/// Route tables by port for the HTTP servers of the Gateways that select `labels`.
pub(super) fn route_tables(
    c: &mut Compiler<'_>,
    resources: &[Resource],
    labels: &BTreeMap<String, String>,
) -> Result<HashMap<u16, RouteConfig>, String> {
    let virtual_services: Vec<(&Resource, &types::VirtualService)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) if !vs.http.is_empty() => Some((r, vs)),
            _ => None,
        })
        .collect();
    let mut ports: HashMap<u16, PortHosts> = HashMap::new();
    for gw in resources {
        let Spec::Gateway(spec) = &gw.spec else {
            continue;
        };
        if !types::labels_match(&spec.selector, labels) {
            continue;
        }
        let binding = Binding::Gateway {
            namespace: gw.namespace(),
            name: gw.name(),
        };
        for (i, server) in spec.servers.iter().enumerate() {
            let Some(port) = http_port(gw, i, server) else {
                continue;
            };
            // A server without bound VirtualServices still listens, answering 404 NR.
            let hosts = ports.entry(port).or_default();
            for (r, vs) in &virtual_services {
                if !binding.binds(&vs.gateways, r.namespace()) {
                    continue;
                }
                let vs_hosts: Vec<String> = vs
                    .hosts
                    .iter()
                    .map(|h| host::fqdn(h, r.namespace()))
                    .collect();
                let server_hosts = server_hosts(server, gw.namespace(), r.namespace());
                for hostname in intersection(&server_hosts, &vs_hosts) {
                    // Compiled per host: routes are not shared between virtual hosts.
                    let routes = c.http_routes(r, vs, &hostname, port, binding)?;
                    hosts.add(hostname, port, r.display_name(), routes);
                }
            }
        }
    }
    Ok(ports
        .into_iter()
        .map(|(port, hosts)| {
            let mut table = RouteConfig {
                port,
                ..Default::default()
            };
            hosts.vhosts.into_iter().for_each(|v| table.add(v));
            (port, table)
        })
        .collect())
}

/// The port of a server Weft's gateway serves (HTTP, HTTP2, GRPC); other servers are
/// skipped, saying so.
fn http_port(gw: &Resource, index: usize, server: &types::Server) -> Option<u16> {
    let port = server.port.as_ref()?;
    let skip = |why: &str| {
        tracing::warn!(
            "{}: spec.servers[{index}] (port {}): {why}; no listener is opened for it",
            gw.display_name(),
            port.number
        );
        None
    };
    if !Protocol::from_name(&port.protocol).is_http() {
        return skip(&format!(
            "protocol {} is not served by Weft's gateway yet (HTTP, HTTP2 and GRPC are)",
            port.protocol
        ));
    }
    if server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
        // Serving plain HTTP instead of redirecting would defeat the point of the setting.
        return skip("tls.httpsRedirect is not implemented");
    }
    u16::try_from(port.number).ok().filter(|&n| n != 0)
}

/// The server's hosts a VirtualService in `vs_namespace` may bind: `ns/host` only in that
/// namespace (`*/` in any, `./` in the Gateway's own), a bare host in any.
fn server_hosts(
    server: &types::Server,
    gateway_namespace: &str,
    vs_namespace: &str,
) -> Vec<String> {
    server
        .hosts
        .iter()
        .filter_map(|h| match h.split_once('/') {
            None => Some(h.as_str()),
            Some((ns, host)) => (ns == "*"
                || ns == vs_namespace
                || (ns == "." && gateway_namespace == vs_namespace))
                .then_some(host),
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Istio's host intersection: for each server host and VirtualService host where one
/// covers the other, the narrower of the two.
fn intersection(server_hosts: &[String], vs_hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in server_hosts {
        for v in vs_hosts {
            let narrower = if host::wildcard_matches(v, s) {
                s
            } else if host::wildcard_matches(s, v) {
                v
            } else {
                continue;
            };
            if !out.contains(narrower) {
                out.push(narrower.clone());
            }
        }
    }
    out
}

/// One port's virtual hosts, one per domain: a domain that several VirtualServices (or
/// servers) name gets their routes in order, as Istio merges them.
#[derive(Default)]
struct PortHosts {
    vhosts: Vec<VirtualHost>,
    by_domain: HashMap<String, usize>,
}

impl PortHosts {
    fn add(&mut self, hostname: String, port: u16, vs: String, routes: Vec<Route>) {
        match self.by_domain.get(&hostname) {
            Some(&i) => self.vhosts[i].routes.extend(routes),
            None => {
                self.by_domain.insert(hostname.clone(), self.vhosts.len());
                self.vhosts.push(VirtualHost {
                    name: format!("{hostname}:{port}"),
                    domains: vec![hostname],
                    routes,
                    virtual_service: Some(vs),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hosts_intersect_as_istio_does() {
        let cases: [(&[&str], &[&str], &[&str]); 5] = [
            (&["*"], &["*"], &["*"]),
            (&["*"], &["bookinfo.com"], &["bookinfo.com"]),
            (
                &["foo.com", "*.net"],
                &["*.com", "bar.net"],
                &["foo.com", "bar.net"],
            ),
            (&["*.net"], &["*.bar.net"], &["*.bar.net"]),
            (&["foo.com"], &["bar.com"], &[]),
        ];
        for (server, vs, want) in cases {
            assert_eq!(
                intersection(&strings(server), &strings(vs)),
                strings(want),
                "{server:?} ∩ {vs:?}"
            );
        }
    }

    #[test]
    fn namespaced_server_hosts_bind_only_their_namespace() {
        let server = types::Server {
            hosts: strings(&["prod/a.com", "*/b.com", "./c.com", "D.com"]),
            ..Default::default()
        };
        assert_eq!(
            server_hosts(&server, "istio-system", "prod"),
            strings(&["a.com", "b.com", "d.com"])
        );
        assert_eq!(
            server_hosts(&server, "istio-system", "istio-system"),
            strings(&["b.com", "c.com", "d.com"])
        );
    }

    #[test]
    fn gateways_are_named_in_the_virtual_service_namespace_or_with_theirs() {
        let ingress = Binding::Gateway {
            namespace: "istio-system",
            name: "ingress",
        };
        assert!(ingress.binds(&strings(&["istio-system/ingress"]), "default"));
        assert!(ingress.binds(&strings(&["ingress"]), "istio-system"));
        assert!(!ingress.binds(&strings(&["ingress"]), "default"));
        assert!(!ingress.binds(&[], "istio-system"));
        assert!(ingress.admits(&[], "default"));
        assert!(!ingress.admits(&strings(&["mesh"]), "default"));
        assert!(Binding::Mesh.binds(&[], "default"));
        assert!(Binding::Mesh.binds(&strings(&["mesh", "ingress"]), "default"));
        assert!(!Binding::Mesh.binds(&strings(&["ingress"]), "default"));
    }
}

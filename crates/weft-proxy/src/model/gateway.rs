//! Istio's `Gateway` for a gateway proxy. The Gateways whose `selector` matches the proxy's
//! labels (in any namespace) declare ports. A plaintext HTTP port gets one route table of
//! virtual hosts from the VirtualServices bound to its servers by `gateways:` (routes
//! compiled exactly as for sidecars, to the same clusters); an HTTPS or TLS port gets its
//! servers, chosen by SNI, each with its TLS (terminated with the credential it names, or
//! passed through) and what follows it: its own route table, a TCP route or SNI routes; a
//! TCP port gets the first bound `tcp` route.

use super::compile::Compiler;
use super::protocol::Protocol;
use super::route::{Route, WeightedClusters};
use super::{GatewayPort, GatewayServer, RouteConfig, ServerTls, Serves, TlsRoute, VirtualHost};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use weft_api::types;
use weft_api::{host, Resource, Spec};
use weft_security::termination;

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

/// What each port of the Gateways that select `labels` serves, in Istio's order: servers
/// of earlier Gateways and earlier in a Gateway first.
pub(super) fn ports(
    c: &mut Compiler<'_>,
    resources: &[Resource],
    labels: &BTreeMap<String, String>,
    namespace: &str,
) -> Result<HashMap<u16, GatewayPort>, String> {
    let virtual_services: Vec<(&Resource, &types::VirtualService)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) => Some((r, vs)),
            _ => None,
        })
        .collect();
    let mut ports: HashMap<u16, Building> = HashMap::new();
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
            let Some(kind) = server_kind(gw, i, server) else {
                continue;
            };
            let port = kind.port;
            let building = ports.entry(port).or_insert_with(|| Building::new(&kind));
            if !building.takes(&kind) {
                warn_skipped(gw, i, port, "another server on the port has a different protocol, and Istio keeps the first");
                continue;
            }
            // The VirtualServices bound to this server, with the hosts they share with it.
            let bound: Vec<(&Resource, &types::VirtualService, Vec<String>)> = virtual_services
                .iter()
                .filter(|(r, vs)| binding.binds(&vs.gateways, r.namespace()))
                .map(|(r, vs)| {
                    let vs_hosts: Vec<String> = vs
                        .hosts
                        .iter()
                        .map(|h| host::fqdn(h, r.namespace()))
                        .collect();
                    let shared = intersection(
                        &server_hosts(server, gw.namespace(), r.namespace()),
                        &vs_hosts,
                    );
                    (*r, *vs, shared)
                })
                .filter(|(_, _, shared)| !shared.is_empty())
                .collect();
            match (&mut *building, kind.carries) {
                (Building::Http(hosts), Carries::Http) => {
                    http_hosts(c, hosts, &bound, port, binding)?;
                    if kind.https_redirect {
                        hosts.require_tls(server, &bound, port);
                    }
                }
                (Building::Tcp(first), Carries::Tcp) => {
                    if first.is_none() {
                        *first = Some(tcp_route(c, &bound, port, binding)?);
                    }
                }
                (Building::Tls(servers), carries) => {
                    let serves = match carries {
                        Carries::Http => {
                            let mut hosts = PortHosts::default();
                            http_hosts(c, &mut hosts, &bound, port, binding)?;
                            Serves::Http(hosts.table(port))
                        }
                        Carries::Tcp => Serves::Tcp(tcp_route(c, &bound, port, binding)?),
                        Carries::Tls => Serves::Tls(tls_routes(c, &bound, port, binding)?),
                    };
                    let name = server_name(gw, server, port);
                    servers.push(GatewayServer {
                        tls: server_tls(resources, namespace, gw, i, server, &kind.tls_mode),
                        name: name.into(),
                        hosts: server
                            .hosts
                            .iter()
                            .map(|h| h.rsplit('/').next().unwrap_or(h).to_ascii_lowercase())
                            .collect(),
                        serves,
                        gateway: gw.display_name(),
                    });
                }
                _ => unreachable!("Building::takes checked the kinds"),
            }
        }
    }
    Ok(ports
        .into_iter()
        .map(|(port, building)| (port, building.finish(port)))
        .collect())
}

/// A port while its servers are added.
enum Building {
    Http(PortHosts),
    Tcp(Option<Option<WeightedClusters>>),
    Tls(Vec<GatewayServer>),
}

impl Building {
    fn new(kind: &ServerKind) -> Building {
        match (kind.tls, kind.carries) {
            (true, _) => Building::Tls(Vec::new()),
            (false, Carries::Tcp) => Building::Tcp(None),
            (false, _) => Building::Http(PortHosts::default()),
        }
    }

    fn takes(&self, kind: &ServerKind) -> bool {
        matches!(
            (self, kind.tls, kind.carries),
            (Building::Tls(_), true, _)
                | (Building::Tcp(_), false, Carries::Tcp)
                | (Building::Http(_), false, Carries::Http)
        )
    }

    fn finish(self, port: u16) -> GatewayPort {
        match self {
            Building::Http(hosts) => GatewayPort::Http(hosts.table(port)),
            Building::Tcp(route) => GatewayPort::Tcp(route.flatten()),
            Building::Tls(servers) => GatewayPort::Tls(servers),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carries {
    Http,
    Tcp,
    /// TLS passed through, routed by SNI.
    Tls,
}

/// What a server's protocol and TLS mode make of its port.
struct ServerKind {
    port: u16,
    /// The connection starts with TLS (HTTPS and TLS servers).
    tls: bool,
    carries: Carries,
    tls_mode: String,
    https_redirect: bool,
}

/// How a server is served, or `None` (saying why) for one Weft does not serve.
fn server_kind(gw: &Resource, index: usize, server: &types::Server) -> Option<ServerKind> {
    let port = server.port.as_ref()?;
    let number = u16::try_from(port.number).ok().filter(|&n| n != 0)?;
    let tls = server.tls.as_ref();
    let tls_mode = tls
        .and_then(|t| t.mode.clone())
        .unwrap_or_else(|| "PASSTHROUGH".into());
    let protocol = Protocol::from_name(&port.protocol);
    let (starts_tls, carries) = match protocol {
        p if p.is_http() => (false, Carries::Http),
        Protocol::Tcp => (false, Carries::Tcp),
        Protocol::Tls => {
            let https = port.protocol.eq_ignore_ascii_case("https");
            match tls_mode.as_str() {
                "PASSTHROUGH" => (true, Carries::Tls),
                "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" | "ISTIO_MUTUAL" if https => {
                    (true, Carries::Http)
                }
                "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" | "ISTIO_MUTUAL" => (true, Carries::Tcp),
                other => {
                    warn_skipped(gw, index, number, &format!("tls.mode {other} is not served by Weft's gateway (PASSTHROUGH, SIMPLE, MUTUAL, OPTIONAL_MUTUAL and ISTIO_MUTUAL are)"));
                    return None;
                }
            }
        }
        _ => {
            warn_skipped(gw, index, number, &format!("protocol {} is not one Weft's gateway serves (HTTP, HTTP2, GRPC, HTTPS, TLS, TCP)", port.protocol));
            return None;
        }
    };
    Some(ServerKind {
        port: number,
        tls: starts_tls,
        carries,
        tls_mode,
        https_redirect: !starts_tls && tls.and_then(|t| t.https_redirect) == Some(true),
    })
}

fn warn_skipped(gw: &Resource, index: usize, port: u16, why: &str) {
    tracing::warn!(
        "{}: spec.servers[{index}] (port {port}): {why}; the server is not served",
        gw.display_name()
    );
}

/// Istio's route-table name for an HTTPS server: `https.PORT.PORT_NAME.GATEWAY.NAMESPACE`.
fn server_name(gw: &Resource, server: &types::Server, port: u16) -> String {
    let port_name = server.port.as_ref().map_or("", |p| p.name.as_str());
    let scheme = match server
        .port
        .as_ref()
        .map(|p| p.protocol.to_ascii_lowercase())
    {
        Some(p) if p == "https" => "https",
        _ => "tls",
    };
    format!(
        "{scheme}.{port}.{port_name}.{}.{}",
        gw.name(),
        gw.namespace()
    )
}

/// The virtual hosts of bound VirtualServices' `http` routes, added to `hosts`.
fn http_hosts(
    c: &mut Compiler<'_>,
    hosts: &mut PortHosts,
    bound: &[(&Resource, &types::VirtualService, Vec<String>)],
    port: u16,
    binding: Binding<'_>,
) -> Result<(), String> {
    for (r, vs, shared) in bound {
        if vs.http.is_empty() {
            continue;
        }
        for hostname in shared {
            // Compiled per host: routes are not shared between virtual hosts.
            let routes = c.http_routes(r, vs, hostname, port, binding)?;
            hosts.add(hostname.clone(), port, Some(r.display_name()), routes);
        }
    }
    Ok(())
}

/// The first `tcp` route of the bound VirtualServices that applies on `port`.
fn tcp_route(
    c: &mut Compiler<'_>,
    bound: &[(&Resource, &types::VirtualService, Vec<String>)],
    port: u16,
    binding: Binding<'_>,
) -> Result<Option<WeightedClusters>, String> {
    for (r, vs, _) in bound {
        let routes = c.tcp_routes(r, vs, port, binding)?;
        if let Some(route) = routes
            .into_iter()
            .find(|t| t.port.is_none_or(|p| p == port))
        {
            return Ok(Some(route.clusters));
        }
    }
    Ok(None)
}

/// The bound VirtualServices' `tls` routes that apply on `port`, each limited to the SNI
/// names the server shares with its VirtualService.
fn tls_routes(
    c: &mut Compiler<'_>,
    bound: &[(&Resource, &types::VirtualService, Vec<String>)],
    port: u16,
    binding: Binding<'_>,
) -> Result<Vec<TlsRoute>, String> {
    let mut out = Vec::new();
    for (r, vs, _) in bound {
        out.extend(
            c.tls_routes(r, vs, binding, Some(port))?
                .into_iter()
                .map(|(_, route)| route),
        );
    }
    Ok(out)
}

/// A server's TLS: its credential from the Secret `credentialName` names in the proxy's
/// namespace (and `NAME-cacert` for the CA, as Istio reads it), else the files named.
fn server_tls(
    resources: &[Resource],
    namespace: &str,
    gw: &Resource,
    index: usize,
    server: &types::Server,
    mode: &str,
) -> ServerTls {
    let settings = server.tls.clone().unwrap_or_default();
    match mode {
        "PASSTHROUGH" => return ServerTls::Passthrough,
        "ISTIO_MUTUAL" => return ServerTls::Mesh,
        _ => {}
    }
    let at = format!("{}: spec.servers[{index}].tls", gw.display_name());
    if let Some(field) = unsupported_check(&settings) {
        let why = format!("{field} is not implemented, and serving without the check it asks for would let in clients it means to refuse");
        tracing::warn!("{at}: {why}");
        return ServerTls::Unavailable(why);
    }
    let credential = match credential(resources, namespace, &settings) {
        Ok(credential) => credential,
        Err(why) => {
            tracing::warn!("{at}: {why}; its handshakes are refused until the credential is there");
            return ServerTls::Unavailable(why);
        }
    };
    let clients = match (mode, &credential.ca) {
        ("SIMPLE", _) => termination::Clients::Anonymous,
        (_, Some(ca)) => termination::Clients::Verified {
            ca_pem: ca.clone(),
            subject_alt_names: settings.subject_alt_names.clone(),
            required: mode == "MUTUAL",
        },
        (_, None) => {
            let why = format!("{mode} needs the CA that client certificates chain to: ca.crt in the Secret, a Secret named {}-cacert, or caCertificates", settings.credential().unwrap_or("NAME"));
            tracing::warn!("{at}: {why}");
            return ServerTls::Unavailable(why);
        }
    };
    let config = termination::server_config(&termination::Termination {
        chain_pem: &credential.chain,
        key_pem: &credential.key,
        clients,
        min_version: settings.min_protocol_version.as_deref(),
        max_version: settings.max_protocol_version.as_deref(),
        alpn: &[b"h2", b"http/1.1"],
    });
    match config {
        Ok(config) => ServerTls::Terminate {
            config: Arc::new(config),
            mode: mode.to_string(),
            credential: credential.from,
        },
        Err(e) => {
            let why = format!("{} ({})", e, credential.from);
            tracing::warn!("{at}: {why}");
            ServerTls::Unavailable(why)
        }
    }
}

/// A client-certificate check the server asks for that Weft does not make.
fn unsupported_check(tls: &types::ServerTlsSettings) -> Option<&'static str> {
    if !tls.verify_certificate_spki.is_empty() {
        Some("verifyCertificateSpki")
    } else if !tls.verify_certificate_hash.is_empty() {
        Some("verifyCertificateHash")
    } else if tls.ca_crl.as_deref().is_some_and(|c| !c.is_empty()) {
        Some("caCrl")
    } else {
        None
    }
}

/// A server's certificate, key and client CA, all PEM, and where they came from.
struct Credential {
    chain: String,
    key: String,
    ca: Option<String>,
    from: String,
}

/// The credential of a server's `tls`: the Secret `credentialName` names in the proxy's
/// own `namespace` (as Istio's SDS reads only those), its CA from the same Secret or
/// `NAME-cacert`; else the files `serverCertificate`, `privateKey` and `caCertificates`.
fn credential(
    resources: &[Resource],
    namespace: &str,
    tls: &types::ServerTlsSettings,
) -> Result<Credential, String> {
    if let Some(name) = tls.credential() {
        let secrets = super::secrets::Secrets {
            resources,
            namespace,
        };
        let found = secrets.credential(
            name,
            &tls.ca_credential().unwrap_or_default(),
            tls.ca_cert_credential_name.is_some(),
            &format!("weft create secret tls {name} -n {namespace} --cert FILE --key FILE"),
        )?;
        let (Some(chain), Some(key)) = (found.chain, found.key) else {
            return Err(format!(
                "{} has no tls.crt and tls.key (nor cert and key)",
                found.from
            ));
        };
        return Ok(Credential {
            chain,
            key,
            ca: found.ca,
            from: found.from,
        });
    }
    let read = |path: &Option<String>, field: &str| -> Result<Option<String>, String> {
        match path.as_deref().filter(|p| !p.is_empty()) {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path)
                .map(Some)
                .map_err(|e| format!("{field} {path}: {e}")),
        }
    };
    let (Some(chain), Some(key)) = (
        read(&tls.server_certificate, "serverCertificate")?,
        read(&tls.private_key, "privateKey")?,
    ) else {
        return Err(
            "no credential: set credentialName, or serverCertificate and privateKey".into(),
        );
    };
    Ok(Credential {
        chain,
        key,
        ca: read(&tls.ca_certificates, "caCertificates")?,
        from: format!(
            "files {} and {}",
            tls.server_certificate.as_deref().unwrap_or_default(),
            tls.private_key.as_deref().unwrap_or_default()
        ),
    })
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
    fn table(self, port: u16) -> RouteConfig {
        let mut table = RouteConfig {
            port,
            ..Default::default()
        };
        self.vhosts.into_iter().for_each(|v| table.add(v));
        table
    }

    /// `tls.httpsRedirect`: the server's hosts, and the names its VirtualServices share
    /// with them (`bookinfo.com` under a `*` server), answer plaintext with a redirect, with
    /// or without a VirtualService bound (as Istio builds a virtual host for each).
    fn require_tls(
        &mut self,
        server: &types::Server,
        bound: &[(&Resource, &types::VirtualService, Vec<String>)],
        port: u16,
    ) {
        let server_hosts = server
            .hosts
            .iter()
            .map(|h| h.rsplit('/').next().unwrap_or(h).to_ascii_lowercase());
        let shared = bound
            .iter()
            .flat_map(|(_, _, shared)| shared.iter().cloned());
        for hostname in server_hosts.chain(shared) {
            if !self.by_domain.contains_key(&hostname) {
                self.add(hostname.clone(), port, None, Vec::new());
            }
            let i = self.by_domain[&hostname];
            self.vhosts[i].require_tls = true;
        }
    }

    fn add(&mut self, hostname: String, port: u16, vs: Option<String>, routes: Vec<Route>) {
        match self.by_domain.get(&hostname) {
            Some(&i) => self.vhosts[i].routes.extend(routes),
            None => {
                self.by_domain.insert(hostname.clone(), self.vhosts.len());
                self.vhosts.push(VirtualHost {
                    name: format!("{hostname}:{port}"),
                    domains: vec![hostname],
                    routes,
                    virtual_service: vs,
                    require_tls: false,
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

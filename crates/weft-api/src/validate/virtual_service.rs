//! `VirtualService`: hosts, gateways, TLS and TCP routes, destinations and weights, exportTo,
//! and the unreachable-rule warnings. HTTP routes are in `http_route`.

use super::common::{export_to, invalid, labels, port, ExportScope, Path, Report, REQUIRED};
use super::http_route::{self, RouteContext};
use super::names::{
    fqdn, gateway_bound_domain, host_subset_of, hosts_overlap, ip_or_cidr, is_ip, is_istio_label,
    wildcard_domain,
};
use crate::types::{
    Destination, Headers, HttpMatchRequest, RouteDestination, TlsRoute, VirtualService,
};
use crate::validate::Severity;
use std::collections::BTreeMap;

/// How the warning for a route after a catch-all ends (analyze's WEFT0002 says it too).
pub const UNUSED_RULE: &str = " (only the last rule can have no matches)";

/// The gateway name that stands for every sidecar in the mesh.
const MESH: &str = "mesh";

pub fn validate(r: &mut Report, vs: &VirtualService, namespace: &str) {
    let spec = Path::spec();
    // A VirtualService without hosts is a delegate: only reachable through another
    // VirtualService's `delegate`, so it cannot bind gateways or carry TLS/TCP routes.
    let delegate = vs.hosts.is_empty();
    if delegate {
        for (field, present, what) in [
            ("gateways", !vs.gateways.is_empty(), "gateways specified"),
            ("tls", !vs.tls.is_empty(), "tls route specified"),
            ("tcp", !vs.tcp.is_empty(), "tcp route specified"),
        ] {
            if present {
                r.error(&spec.field(field), format!("delegate virtual service must have no {what}"))
                    .with_hint("a VirtualService without hosts is a delegate; give it hosts to use it directly");
            }
        }
    }
    gateway_names(r, &spec.field("gateways"), &vs.gateways);
    let gateway_bound = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == MESH);
    let sni = vs
        .tls
        .iter()
        .flat_map(|t| &t.matches)
        .any(|m| !m.sni_hosts.is_empty());

    let mut all_hosts_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let at = spec.field("hosts").index(i);
        let checked = if gateway_bound {
            gateway_bound_domain(host, sni)
        } else {
            wildcard_domain(host)
        };
        match checked {
            Err(e) if !is_ip(host) => {
                r.error(&at, invalid(host, e));
                all_hosts_valid = false;
            }
            Ok(()) if !gateway_bound && host == "*" => {
                r.error(&at, "wildcard host * is not allowed for virtual services bound to the mesh gateway")
                    .with_hint("name the hosts, or bind the VirtualService only to ingress/egress gateways (gateways without \"mesh\")");
                all_hosts_valid = false;
            }
            _ => {}
        }
    }
    // `*.foo.com` and `a.foo.com` in one VirtualService compete for the same requests.
    if all_hosts_valid {
        for (j, b) in vs.hosts.iter().enumerate() {
            if let Some(a) = vs.hosts[..j].iter().find(|a| hosts_overlap(a, b)) {
                r.error(
                    &spec.field("hosts").index(j),
                    format!("duplicate hosts in virtual service: {a} & {b}"),
                );
            }
        }
    }

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        r.error(
            &spec,
            "http, tcp or tls must be provided in virtual service",
        )
        .with_hint("without routes this VirtualService does nothing");
    }
    let ctx = RouteContext {
        delegate,
        gateway_bound,
    };
    for (i, route) in vs.http.iter().enumerate() {
        http_route::validate(r, &spec.field("http").index(i), route, ctx);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        tls_route(r, &spec.field("tls").index(i), route, vs, gateway_bound);
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        let at = spec.field("tcp").index(i);
        for (j, m) in route.matches.iter().enumerate() {
            let at = at.field("match").index(j);
            l4_match(
                r,
                &at,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
        }
        l4_destinations(r, &at.field("route"), &route.route, "TCP");
    }
    export_to(
        r,
        &spec.field("exportTo"),
        namespace,
        &vs.export_to,
        ExportScope::Plain,
    );

    let http: Vec<_> = vs
        .http
        .iter()
        .map(|h| {
            let unnamed = h
                .matches
                .iter()
                .map(|m| HttpMatchRequest {
                    name: None,
                    ..m.clone()
                })
                .collect();
            (h.name.as_deref(), unnamed)
        })
        .collect();
    unreachable_rules(r, &spec.field("http"), &http);
    let tcp: Vec<_> = vs.tcp.iter().map(|t| (None, t.matches.clone())).collect();
    unreachable_rules(r, &spec.field("tcp"), &tcp);
    let tls: Vec<_> = vs.tls.iter().map(|t| (None, t.matches.clone())).collect();
    unreachable_rules(r, &spec.field("tls"), &tls);
}

fn tls_route(
    r: &mut Report,
    path: &Path,
    route: &TlsRoute,
    vs: &VirtualService,
    gateway_bound: bool,
) {
    if route.matches.is_empty() {
        r.error(
            &path.field("match"),
            format!("{REQUIRED}: TLS route must have at least one match condition"),
        )
        .with_hint("TLS routes select connections by SNI: add match: [{sniHosts: [...]}]");
    }
    for (j, m) in route.matches.iter().enumerate() {
        let at = path.field("match").index(j);
        if m.sni_hosts.is_empty() {
            r.error(
                &at.field("sniHosts"),
                format!("{REQUIRED}: TLS match must have at least one SNI host"),
            );
        }
        for (k, sni) in m.sni_hosts.iter().enumerate() {
            sni_host(r, &at.field("sniHosts").index(k), sni, vs, gateway_bound);
        }
        l4_match(
            r,
            &at,
            &m.destination_subnets,
            m.port,
            &m.source_labels,
            &m.gateways,
        );
    }
    l4_destinations(r, &path.field("route"), &route.route, "TLS");
}

/// A tcp[] or tls[] route needs destinations, checked as http ones are.
fn l4_destinations(r: &mut Report, path: &Path, route: &[RouteDestination], kind: &str) {
    if route.is_empty() {
        r.error(path, format!("{REQUIRED}: {kind} route is required"));
    }
    route_destinations(r, path, &plain(route));
}

fn sni_host(r: &mut Report, path: &Path, sni: &str, vs: &VirtualService, gateway_bound: bool) {
    let checked = if gateway_bound {
        gateway_bound_domain(sni, true)
    } else {
        wildcard_domain(sni)
    };
    if let Err(e) = checked {
        if is_ip(sni) {
            r.warning(path, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
        } else {
            r.error(path, invalid(sni, e));
        }
        return;
    }
    if !vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
        r.error(
            path,
            format!(
            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
            vs.hosts.join(", ")
        ),
        )
        .with_hint("every sniHost must be one of spec.hosts or covered by a wildcard there");
    }
}

/// The parts TCP and TLS matches share.
fn l4_match(
    r: &mut Report,
    path: &Path,
    subnets: &[String],
    port_number: Option<u32>,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
) {
    for (k, subnet) in subnets.iter().enumerate() {
        if let Err(e) = ip_or_cidr(subnet) {
            r.error(
                &path.field("destinationSubnets").index(k),
                invalid(subnet, e),
            );
        }
    }
    if let Some(p) = port_number.filter(|p| *p != 0) {
        port(r, &path.field("port"), p);
    }
    labels(
        r,
        &path.field("sourceLabels"),
        source_labels,
        Severity::Error,
    );
    gateway_names(r, &path.field("gateways"), gateways);
}

/// `gateways` entries: `mesh`, `name` or `namespace/name`.
pub fn gateway_names(r: &mut Report, path: &Path, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let at = path.index(i);
        let Some((ns, gw)) = name.split_once('/') else {
            if let Some((gw, ns)) = name.split_once('.') {
                r.warning(&at, format!("using legacy gatewayName format {name:?}; prefer the <namespace>/<name> format: \"{}/{gw}\"", ns.split('.').next().unwrap_or(ns)));
            }
            if let Err(e) = fqdn(name) {
                r.error(&at, invalid(name, e));
            }
            continue;
        };
        if ns.is_empty() || gw.is_empty() {
            r.error(
                &at,
                invalid(name, "config namespace and gateway name cannot be empty"),
            );
            continue;
        }
        if !is_istio_label(ns) {
            r.error(
                &at,
                invalid(name, format!("invalid value for namespace: {ns:?}")),
            );
        }
        if !is_istio_label(gw) {
            r.error(
                &at,
                invalid(name, format!("invalid value for gateway name: {gw:?}")),
            );
        }
    }
}

/// One entry of a route list, HTTP or L4.
pub struct Weighted<'a> {
    pub destination: Option<&'a Destination>,
    pub weight: Option<i32>,
    pub headers: Option<&'a Headers>,
}

fn plain(routes: &[RouteDestination]) -> Vec<Weighted<'_>> {
    routes
        .iter()
        .map(|d| Weighted {
            destination: d.destination.as_ref(),
            weight: d.weight,
            headers: None,
        })
        .collect()
}

/// Destinations and weights. Weights are relative: each must be non-negative and, with more
/// than one destination, at least one positive; they need not add up to 100.
pub fn route_destinations(r: &mut Report, path: &Path, routes: &[Weighted<'_>]) {
    let mut total: i64 = 0;
    for (i, entry) in routes.iter().enumerate() {
        let at = path.index(i);
        match entry.destination {
            None => {
                r.error(
                    &at.field("destination"),
                    format!("{REQUIRED}: destination is required"),
                );
            }
            Some(d) => destination(r, &at.field("destination"), d),
        }
        if let Some(w) = entry.weight {
            if w < 0 {
                r.error(
                    &at.field("weight"),
                    invalid(w, "weight must not be negative"),
                );
            }
            total += i64::from(w.max(0));
        }
        if let Some(headers) = entry.headers {
            super::http::header_operations(r, &at.field("headers"), headers, None);
        }
    }
    if routes.len() > 1 && total == 0 {
        r.error(path, "total destination weight = 0")
            .with_hint("weights are relative; give at least one destination a positive weight");
    }
}

/// A destination: a service host (not `*`), an optional subset name and port.
pub fn destination(r: &mut Report, path: &Path, d: &Destination) {
    if d.host.is_empty() {
        r.required(&path.field("host"))
            .with_hint("name the service, e.g. host: reviews or reviews.prod.svc.cluster.local");
    } else if d.host == "*" {
        r.error(
            &path.field("host"),
            invalid(&d.host, "invalid destination host *"),
        );
    } else if let Err(e) = wildcard_domain(&d.host) {
        r.error(&path.field("host"), invalid(&d.host, e));
    }
    if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
        if !is_istio_label(subset) {
            r.error(
                &path.field("subset"),
                invalid(subset, "subset name is invalid (must be a DNS-1123 label)"),
            );
        }
    }
    if let Some(p) = d.port {
        port(r, &path.field("port").field("number"), p.number);
    }
}

/// Istio's unreachable-rule analysis, as warnings: a second catch-all rule, or a rule whose
/// every match repeats an earlier one, can never be selected.
fn unreachable_rules<M: PartialEq>(r: &mut Report, path: &Path, rules: &[(Option<&str>, Vec<M>)]) {
    let rule_name = |i: usize| match rules[i].0 {
        Some(name) if !name.is_empty() => format!("{name:?}"),
        _ => format!("#{i}"),
    };
    let mut catch_all_seen = false;
    for (i, (_, matches)) in rules.iter().enumerate() {
        if matches.is_empty() {
            if catch_all_seen {
                r.warning(
                    &path.index(i),
                    format!("virtualService rule {} not used{UNUSED_RULE}", rule_name(i)),
                );
            }
            catch_all_seen = true;
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in matches.iter().enumerate() {
            let earlier = rules[..i].iter().position(|(_, prev)| prev.contains(m));
            if let Some(k) = earlier {
                duplicates += 1;
                r.warning(&path.index(i).field("match").index(j), format!(
                    "virtualService rule {} match #{j} is not used (duplicate/overlapping match in rule {})",
                    rule_name(i),
                    rule_name(k)
                ));
            }
        }
        if duplicates == matches.len() {
            r.warning(
                &path.index(i),
                format!(
                    "virtualService rule {} not used (all matches used by prior rules)",
                    rule_name(i)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;

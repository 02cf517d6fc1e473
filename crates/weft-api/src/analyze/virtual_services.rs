//! VirtualServices on their own and against each other: two claiming one host for the mesh
//! (IST0109), weights that do not add up to 100 (WEFT0001), routes an earlier catch-all
//! hides (WEFT0002). Also the walk over a VirtualService's routes the other analyzers share.

use super::mesh::{hosts_overlap, Mesh};
use super::{
    Report, CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS, ROUTE_WEIGHTS_NOT_100, SHADOWED_ROUTE,
};
use crate::host;
use crate::resource::Resource;
use crate::types::{
    Destination, HttpMatchRequest, HttpRoute, RouteDestination, StringMatch, VirtualService,
};
use std::collections::{BTreeMap, BTreeSet};

/// One route of a VirtualService (`http[0] "name"`, `tcp[1]`, `tls[0]`) and its weighted
/// destinations.
pub(crate) struct RouteTable<'a> {
    pub label: String,
    pub destinations: Vec<(&'a Destination, Option<i32>)>,
}

/// Every http, tcp and tls route, in order.
pub(crate) fn route_tables(vs: &VirtualService) -> Vec<RouteTable<'_>> {
    let http = vs.http.iter().enumerate().map(|(i, route)| RouteTable {
        label: http_label(i, route),
        destinations: weighted(route.route.iter().map(|d| (&d.destination, d.weight))),
    });
    let tcp = vs.tcp.iter().enumerate().map(|(i, route)| RouteTable {
        label: format!("tcp[{i}]"),
        destinations: weighted(route.route.iter().map(l4)),
    });
    let tls = vs.tls.iter().enumerate().map(|(i, route)| RouteTable {
        label: format!("tls[{i}]"),
        destinations: weighted(route.route.iter().map(l4)),
    });
    http.chain(tcp).chain(tls).collect()
}

fn l4(d: &RouteDestination) -> (&Option<Destination>, Option<i32>) {
    (&d.destination, d.weight)
}

fn weighted<'a>(
    entries: impl Iterator<Item = (&'a Option<Destination>, Option<i32>)>,
) -> Vec<(&'a Destination, Option<i32>)> {
    entries
        .filter_map(|(d, weight)| Some((d.as_ref()?, weight)))
        .collect()
}

/// `http[2]`, or `http[2] "name"` when the route has a name.
fn http_label(index: usize, route: &HttpRoute) -> String {
    match route.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => format!("http[{index}] {name:?}"),
        None => format!("http[{index}]"),
    }
}

/// A VirtualService with no `gateways` applies to sidecars; one that lists gateways applies
/// to sidecars only when it lists `mesh`.
fn bound_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// IST0109: VirtualServices bound to the mesh that define the same host for the same
/// namespaces. Sidecars do not merge them (gateways do): only one of them takes effect.
/// Hosts are grouped as Istio's analyzer groups them: by `exportTo` scope (`*` for every
/// namespace) and FQDN; a namespace-scoped host also conflicts with every-namespace hosts
/// that overlap it.
pub(crate) fn conflicting_hosts(mesh: &Mesh<'_>, report: &mut Report) {
    let mut by_host: BTreeMap<(String, String), Vec<&Resource>> = BTreeMap::new();
    for (r, vs) in mesh.virtual_services().filter(|(_, vs)| bound_to_mesh(vs)) {
        let scopes: BTreeSet<&str> =
            if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
                BTreeSet::from(["*"])
            } else {
                vs.export_to
                    .iter()
                    .map(|e| if e == "." { r.namespace() } else { e.as_str() })
                    .collect()
            };
        for scope in scopes {
            for h in &vs.hosts {
                let list = by_host
                    .entry((scope.to_string(), host::fqdn(h, r.namespace())))
                    .or_default();
                if !list.iter().any(|other| std::ptr::eq(*other, r)) {
                    list.push(r);
                }
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, fqdn), list) in &by_host {
        let mut list = list.clone();
        if scope != "*" {
            for ((other_scope, other), more) in &by_host {
                if other_scope == "*" && hosts_overlap(fqdn, other) {
                    for r in more {
                        if !list.iter().any(|l| std::ptr::eq(*l, *r)) {
                            list.push(r);
                        }
                    }
                }
            }
        }
        if list.len() < 2 {
            continue;
        }
        let mut names: Vec<String> = list
            .iter()
            .map(|r| format!("{}/{}", r.namespace(), r.name()))
            .collect();
        names.sort();
        let names = names.join(",");
        for r in list {
            if reported.insert((r.namespace(), r.name())) {
                report.add(
                    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                    r,
                    format!("The VirtualServices {names} associated with mesh gateway define the same host {scope}/{fqdn} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."),
                );
            }
        }
    }
}

/// WEFT0001: a route with several destinations whose weights do not add up to 100. Istio
/// (and Weft) treat weights as relative, and a missing weight as 0, so the route still
/// works: the message says what split it gives.
pub(crate) fn weights(mesh: &Mesh<'_>, report: &mut Report) {
    for (r, vs) in mesh.virtual_services() {
        for table in route_tables(vs) {
            if table.destinations.len() < 2 {
                continue;
            }
            let weight = |w: Option<i32>| w.unwrap_or(0).max(0) as u64;
            let total: u64 = table.destinations.iter().map(|(_, w)| weight(*w)).sum();
            // A zero total is a validation error; the resource never gets here.
            if total == 100 || total == 0 {
                continue;
            }
            let split: Vec<String> = table
                .destinations
                .iter()
                .map(|(d, w)| {
                    let share = percent(weight(*w) as f64 * 100.0 / total as f64);
                    match w {
                        Some(_) => format!("{} {share}", destination_name(d)),
                        None => format!("{} {share} (no weight)", destination_name(d)),
                    }
                })
                .collect();
            report.add(
                ROUTE_WEIGHTS_NOT_100,
                r,
                format!(
                    "{} weights sum to {total}, not 100: Istio treats weights as relative, so the effective split is {}",
                    table.label,
                    split.join(", ")
                ),
            );
        }
    }
}

/// `reviews`, `reviews:9080`, `reviews+v1` as Istio names a destination.
fn destination_name(d: &Destination) -> String {
    let mut name = d.host.clone();
    if let Some(port) = d.port {
        name.push_str(&format!(":{}", port.number));
    }
    if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
        name.push('+');
        name.push_str(subset);
    }
    name
}

/// `50%`, `33.3%`.
fn percent(value: f64) -> String {
    let tenths = (value * 10.0).round() / 10.0;
    if tenths.fract() == 0.0 {
        format!("{tenths:.0}%")
    } else {
        format!("{tenths:.1}%")
    }
}

/// WEFT0002: http routes after one that matches every request can never be chosen: routes
/// are tried in order and the first that matches wins.
pub(crate) fn shadowed_routes(mesh: &Mesh<'_>, report: &mut Report) {
    for (r, vs) in mesh.virtual_services() {
        let Some(first) = vs.http.iter().position(matches_everything) else {
            continue;
        };
        for (i, route) in vs.http.iter().enumerate().skip(first + 1) {
            report.add(
                SHADOWED_ROUTE,
                r,
                format!(
                    "{} can never match: {} matches every request",
                    http_label(i, route),
                    http_label(first, &vs.http[first])
                ),
            );
        }
    }
}

/// No `match`, or a `match` entry (they are alternatives) that sets no condition but
/// possibly `uri: {prefix: "/"}`.
fn matches_everything(route: &HttpRoute) -> bool {
    route.matches.is_empty() || route.matches.iter().any(is_catch_all)
}

fn is_catch_all(m: &HttpMatchRequest) -> bool {
    let every_uri = match &m.uri {
        None => true,
        Some(uri) => *uri == StringMatch::prefix("/"),
    };
    every_uri
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.port.is_none()
        && m.source_labels.is_empty()
        && m.gateways.is_empty()
        && m.query_params.is_empty()
        && m.without_headers.is_empty()
        && m.source_namespace.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::test_support::*;

    fn mesh_vs(name: &str, namespace: &str, extra: &str, hosts: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  hosts: {hosts}\n{extra}  http:\n  - route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]\n")
    }

    fn conflicts(documents: &[&str]) -> Vec<String> {
        let mut all = vec![REVIEWS_SERVICE];
        all.extend_from_slice(documents);
        lines_with(&docs(&all), "IST0109")
    }

    #[test]
    fn two_mesh_virtual_services_for_one_host_are_ist0109() {
        let a = mesh_vs("a", "default", "", "[reviews]");
        let b = mesh_vs(
            "b",
            "default",
            "  gateways: [mesh, edge/gw]\n",
            "[reviews.default.svc.cluster.local]",
        );
        let text = "associated with mesh gateway define the same host */reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.";
        assert_eq!(
            conflicts(&[&a, &b]),
            [
                format!("Error [IST0109] (VirtualService default/a) The VirtualServices default/a,default/b {text}"),
                format!("Error [IST0109] (VirtualService default/b) The VirtualServices default/a,default/b {text}"),
            ]
        );
    }

    #[test]
    fn gateway_only_and_namespace_scoped_virtual_services_do_not_conflict() {
        let a = mesh_vs("a", "default", "", "[reviews]");
        let gw = mesh_vs("gw", "default", "  gateways: [edge/gw]\n", "[reviews]");
        assert_eq!(conflicts(&[&a, &gw]), Vec::<String>::new());
        let team1 = mesh_vs(
            "p",
            "team1",
            "  exportTo: ['.']\n",
            "[reviews.default.svc.cluster.local]",
        );
        let team2 = mesh_vs(
            "p",
            "team2",
            "  exportTo: ['.']\n",
            "[reviews.default.svc.cluster.local]",
        );
        assert_eq!(conflicts(&[&team1, &team2]), Vec::<String>::new());
        // A namespace-scoped host still conflicts with one exported everywhere.
        let everywhere = mesh_vs("all", "team3", "", "[reviews.default.svc.cluster.local]");
        let found = conflicts(&[&team1, &everywhere]);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].contains("team1/p,team3/all")
                && found[0].contains("host team1/reviews.default.svc.cluster.local"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn weights_that_do_not_sum_to_100_are_weft0001() {
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - name: canary\n    match: [{headers: {x-canary: {exact: 'yes'}}}]\n    route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n    - destination: {host: reviews, subset: v2}\n      weight: 30\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 60\n    - destination: {host: reviews, subset: v2}\n      weight: 40\n  tcp:\n  - route:\n    - destination: {host: reviews, port: {number: 9080}}\n      weight: 1\n    - destination: {host: reviews, port: {number: 9081}}\n      weight: 2\n    - destination: {host: reviews, port: {number: 9082}}\n";
        let yaml = docs(&[REVIEWS_SERVICE, REVIEWS_RULE, vs]);
        assert_eq!(
            lines_with(&yaml, "WEFT0001"),
            [
                "Warning [WEFT0001] (VirtualService default/reviews) http[0] \"canary\" weights sum to 120, not 100: Istio treats weights as relative, so the effective split is reviews+v1 75%, reviews+v2 25%",
                "Warning [WEFT0001] (VirtualService default/reviews) tcp[0] weights sum to 3, not 100: Istio treats weights as relative, so the effective split is reviews:9080 33.3%, reviews:9081 66.7%, reviews:9082 0% (no weight)",
            ]
        );
    }

    #[test]
    fn routes_after_a_catch_all_are_weft0002() {
        let http = "  - name: jason\n    match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews}}]\n  - name: everyone\n    match: [{headers: {x-a: {exact: a}}}, {uri: {prefix: /}}]\n    route: [{destination: {host: reviews}}]\n  - route: [{destination: {host: reviews}}]\n  - name: late\n    match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: reviews}}]\n";
        let yaml = docs(&[REVIEWS_SERVICE, &reviews_vs("reviews", http)]);
        assert_eq!(
            lines(&yaml),
            [
                "Warning [WEFT0002] (VirtualService default/reviews) http[2] can never match: http[1] \"everyone\" matches every request",
                "Warning [WEFT0002] (VirtualService default/reviews) http[3] \"late\" can never match: http[1] \"everyone\" matches every request",
            ]
        );
    }

    #[test]
    fn a_catch_all_needs_every_condition_unset() {
        let m = |yaml: &str| -> HttpMatchRequest { serde_norway::from_str(yaml).expect("match") };
        assert!(is_catch_all(&m("{}")));
        assert!(is_catch_all(&m(
            "{uri: {prefix: /}, name: all, ignoreUriCase: true}"
        )));
        for narrower in [
            "{uri: {prefix: /api}}",
            "{uri: {exact: /}}",
            "{method: {exact: GET}}",
            "{port: 8080}",
            "{sourceLabels: {app: a}}",
            "{gateways: [mesh]}",
            "{queryParams: {a: {exact: b}}}",
            "{withoutHeaders: {a: {}}}",
            "{sourceNamespace: prod}",
            "{authority: {exact: a}}",
            "{scheme: {exact: https}}",
        ] {
            assert!(!is_catch_all(&m(narrower)), "{narrower}");
        }
        assert_eq!(percent(50.0), "50%");
        assert_eq!(percent(100.0 / 3.0), "33.3%");
    }
}

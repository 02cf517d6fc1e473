//! What a VirtualService refers to: destination hosts and subsets (IST0101), gateways
//! (IST0101) and the hosts those gateways serve (IST0132).

use super::mesh::{hosts_overlap, Mesh};
use super::{Report, REFERENCED_RESOURCE_NOT_FOUND, VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY};
use crate::host;
use crate::resource::Resource;
use crate::types::{Destination, Gateway, VirtualService};

/// What istioctl calls a destination's host and subset, for route and mirror destinations.
struct Refs {
    host: &'static str,
    subset: &'static str,
}

const ROUTE: Refs = Refs {
    host: "host",
    subset: "host+subset in destinationrule",
};
const MIRROR: Refs = Refs {
    host: "mirror host",
    subset: "mirror+subset in destinationrule",
};

/// Every route and mirror destination of `vs`, with the path of its `destination` field
/// (or of the `mirror` field, which is one).
type Found<'a> = Vec<(&'a Destination, String, &'static Refs)>;

fn destinations_at(vs: &VirtualService) -> Found<'_> {
    fn add<'a>(all: &mut Found<'a>, d: &'a Option<Destination>, path: String, refs: &'static Refs) {
        if let Some(d) = d {
            all.push((d, path, refs));
        }
    }
    let mut all = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        for (j, d) in route.route.iter().enumerate() {
            let path = format!("spec.http[{i}].route[{j}].destination");
            add(&mut all, &d.destination, path, &ROUTE);
        }
        add(
            &mut all,
            &route.mirror,
            format!("spec.http[{i}].mirror"),
            &MIRROR,
        );
        for (j, m) in route.mirrors.iter().enumerate() {
            let path = format!("spec.http[{i}].mirrors[{j}].destination");
            add(&mut all, &m.destination, path, &MIRROR);
        }
    }
    let tcp = vs.tcp.iter().map(|r| ("tcp", &r.route)).enumerate();
    let tls = vs.tls.iter().map(|r| ("tls", &r.route)).enumerate();
    for (i, (kind, routes)) in tcp.chain(tls) {
        for (j, d) in routes.iter().enumerate() {
            let path = format!("spec.{kind}[{i}].route[{j}].destination");
            add(&mut all, &d.destination, path, &ROUTE);
        }
    }
    all
}

/// IST0101 `Referenced host not found`: a route, tcp, tls or mirror destination that no
/// Service or ServiceEntry visible from the VirtualService's namespace provides; IST0101
/// `Referenced host+subset in destinationrule not found`: a subset no DestinationRule for the
/// host defines.
pub(crate) fn destinations(mesh: &Mesh<'_>, report: &mut Report) {
    for (r, vs) in mesh.virtual_services() {
        let namespace = r.namespace();
        for (d, path, refs) in destinations_at(vs) {
            let fqdn = host::fqdn(&d.host, namespace);
            if !mesh.knows_host(&fqdn, namespace) {
                not_found(report, r, format!("{path}.host"), refs.host, &d.host);
            }
            if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
                if !mesh.defines_subset(&fqdn, subset) {
                    let what = format!("{}+{subset}", d.host);
                    not_found(report, r, format!("{path}.subset"), refs.subset, &what);
                }
            }
        }
    }
}

/// IST0101 `Referenced gateway not found`, and IST0132: VirtualService hosts that none of
/// the (existing) gateway's servers serve.
pub(crate) fn gateways(mesh: &Mesh<'_>, report: &mut Report) {
    for (r, vs) in mesh.virtual_services() {
        for (k, reference) in vs.gateways.iter().enumerate().filter(|(_, g)| *g != "mesh") {
            let (namespace, name) = gateway_name(reference, r.namespace());
            let Some((gw_resource, gw)) = mesh.gateway(namespace, name) else {
                not_found(
                    report,
                    r,
                    format!("spec.gateways[{k}]"),
                    "gateway",
                    reference,
                );
                continue;
            };
            let served = served_hosts(gw, gw_resource.namespace(), r.namespace());
            let missing: Vec<(usize, &str)> = vs
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| {
                    let fqdn = host::fqdn(h, r.namespace());
                    !served.iter().any(|s| hosts_overlap(s, &fqdn))
                })
                .map(|(i, h)| (i, h.as_str()))
                .collect();
            if let Some((first, _)) = missing.first() {
                let missing: Vec<&str> = missing.iter().map(|(_, h)| *h).collect();
                report.add_at(
                    VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                    r,
                    format!("spec.hosts[{first}]"),
                    format!(
                        "one or more host [{}] defined in VirtualService {}/{} not found in Gateway {namespace}/{name}.",
                        missing.join(" "),
                        r.namespace(),
                        r.name()
                    ),
                );
            }
        }
    }
}

fn not_found(report: &mut Report, r: &Resource, path: String, what: &str, value: &str) {
    report.add_at(
        REFERENCED_RESOURCE_NOT_FOUND,
        r,
        path,
        format!("Referenced {what} not found: {value:?}"),
    );
}

/// `namespace/name`, `name` (in the VirtualService's namespace), or the legacy
/// `name.namespace[.svc.cluster.local]`, as Istio resolves `gateways` entries.
fn gateway_name<'n>(reference: &'n str, vs_namespace: &'n str) -> (&'n str, &'n str) {
    if let Some(split) = reference.split_once('/') {
        split
    } else if let Some((name, rest)) = reference.split_once('.') {
        (rest.split('.').next().unwrap_or(rest), name)
    } else {
        (vs_namespace, reference)
    }
}

/// The hosts a gateway's servers serve to VirtualServices in `vs_namespace`: `ns/host`
/// entries count only for that namespace (`.` is the gateway's, `*` any).
fn served_hosts(gw: &Gateway, gw_namespace: &str, vs_namespace: &str) -> Vec<String> {
    gw.servers
        .iter()
        .flat_map(|s| &s.hosts)
        .filter_map(|entry| match entry.split_once('/') {
            None => Some(entry.as_str()),
            Some((ns, h)) => {
                let ns = if ns == "." { gw_namespace } else { ns };
                (ns == "*" || ns == vs_namespace).then_some(h)
            }
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::test_support::*;

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: shop-gateway\n  namespace: edge\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*.shop.example.com', './edge.example.com', 'prod/admin.example.com']\n";

    fn routed(destination: &str) -> String {
        reviews_vs(
            "reviews",
            &format!("  - route:\n    - destination: {destination}\n"),
        )
    }

    #[test]
    fn a_missing_subset_is_ist0101() {
        let yaml = docs(&[
            REVIEWS_SERVICE,
            REVIEWS_RULE,
            &routed("{host: reviews, subset: v4}"),
        ]);
        assert_eq!(
            lines(&yaml),
            ["Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: \"reviews+v4\""]
        );
        // The same subset, named by the long host or in a rule elsewhere, is found.
        let yaml = docs(&[
            REVIEWS_SERVICE,
            &REVIEWS_RULE.replace("host: reviews", "host: reviews.default.svc.cluster.local"),
            &routed("{host: reviews.default.svc.cluster.local, subset: v2}"),
        ]);
        assert_eq!(lines(&yaml), Vec::<String>::new());
    }

    #[test]
    fn unknown_hosts_in_routes_tcp_tls_and_mirrors_are_ist0101() {
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: edge\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n    mirror: {host: shadow, subset: v1}\n  - route: [{destination: {host: reviews}}]\n    mirrors: [{destination: {host: reviews, subset: v9}}]\n  tcp:\n  - route: [{destination: {host: db.example.com, port: {number: 5432}}}]\n  tls:\n  - match: [{sniHosts: [reviews]}]\n    route: [{destination: {host: api.example.com}}]\n";
        let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: api\nspec:\n  hosts: ['*.example.com']\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: NONE\n";
        let with = |extra: &[&str]| {
            let mut documents = vec![REVIEWS_SERVICE, REVIEWS_RULE, vs];
            documents.extend_from_slice(extra);
            lines_with(&docs(&documents), "IST0101")
        };
        let prefix = "Error [IST0101] (VirtualService default/edge) Referenced";
        assert_eq!(
            with(&[]),
            [
                format!("{prefix} host not found: \"api.example.com\""),
                format!("{prefix} host not found: \"db.example.com\""),
                format!("{prefix} mirror host not found: \"shadow\""),
                format!("{prefix} mirror+subset in destinationrule not found: \"reviews+v9\""),
                format!("{prefix} mirror+subset in destinationrule not found: \"shadow+v1\""),
            ]
        );
        // A wildcard ServiceEntry host covers both external hosts.
        assert_eq!(with(&[se]).len(), 3);
    }

    #[test]
    fn each_reference_names_its_field() {
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: edge\nspec:\n  hosts: [reviews, shop.example.com]\n  gateways: [mesh, missing-gateway]\n  http:\n  - route: [{destination: {host: reviews}, weight: 50}, {destination: {host: reviewz}, weight: 50}]\n    mirror: {host: shadow}\n  - route: [{destination: {host: reviews, subset: v9}}]\n    mirrors: [{destination: {host: shadow2}}]\n  tcp:\n  - route: [{destination: {host: db.example.com}}]\n";
        let yaml = docs(&[REVIEWS_SERVICE, REVIEWS_RULE, vs]);
        let messages = crate::analyze::analyze(&crate::analyze::Input::from_yaml(
            &yaml,
            std::path::Path::new("test.yaml"),
        ));
        assert!(
            messages.iter().all(|m| m.code() != "IST0106"),
            "{messages:#?}"
        );
        let mut paths: Vec<(&str, &str)> = messages
            .iter()
            .filter(|m| m.code() == "IST0101")
            .map(|m| (m.path.as_deref().unwrap_or("-"), m.text.as_str()))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                (
                    "spec.gateways[1]",
                    "Referenced gateway not found: \"missing-gateway\""
                ),
                (
                    "spec.http[0].mirror.host",
                    "Referenced mirror host not found: \"shadow\""
                ),
                (
                    "spec.http[0].route[1].destination.host",
                    "Referenced host not found: \"reviewz\""
                ),
                (
                    "spec.http[1].mirrors[0].destination.host",
                    "Referenced mirror host not found: \"shadow2\""
                ),
                (
                    "spec.http[1].route[0].destination.subset",
                    "Referenced host+subset in destinationrule not found: \"reviews+v9\""
                ),
                (
                    "spec.tcp[0].route[0].destination.host",
                    "Referenced host not found: \"db.example.com\""
                ),
            ]
        );
    }

    #[test]
    fn hosts_hidden_by_export_to_are_not_found() {
        let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ratings\n  namespace: prod\n  annotations: {networking.istio.io/exportTo: '.'}\nspec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}]\n";
        let yaml = docs(&[svc, &routed("{host: ratings.prod.svc.cluster.local}")]);
        assert_eq!(
            lines_with(&yaml, "IST0101"),
            ["Error [IST0101] (VirtualService default/reviews) Referenced host not found: \"ratings.prod.svc.cluster.local\""]
        );
    }

    fn bound(gateways: &str, hosts: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: front\n  namespace: prod\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n  http:\n  - route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]\n")
    }

    fn gateway_lines(gateways: &str, hosts: &str) -> Vec<String> {
        lines(&docs(&[REVIEWS_SERVICE, GATEWAY, &bound(gateways, hosts)]))
    }

    #[test]
    fn gateways_resolve_by_namespace_name_short_name_and_legacy_name() {
        assert_eq!(
            gateway_lines("[mesh, edge/shop-gateway]", "[www.shop.example.com]"),
            Vec::<String>::new()
        );
        // Found too, with validation's advice to use the current form.
        for legacy in ["shop-gateway.edge", "shop-gateway.edge.svc.cluster.local"] {
            let lines = gateway_lines(&format!("[{legacy}]"), "[www.shop.example.com]");
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(
                lines[0].starts_with("Warning [WEFT0004]")
                    && lines[0].contains("legacy gatewayName format"),
                "{lines:?}"
            );
        }
        assert_eq!(
            gateway_lines("[shop-gateway, mesh]", "[www.shop.example.com]"),
            ["Error [IST0101] (VirtualService prod/front) Referenced gateway not found: \"shop-gateway\""]
        );
    }

    #[test]
    fn hosts_a_gateway_does_not_serve_are_ist0132() {
        // admin.example.com is served to prod only; edge.example.com to the gateway's own
        // namespace only.
        assert_eq!(
            gateway_lines(
                "[edge/shop-gateway]",
                "[a.shop.example.com, admin.example.com, edge.example.com, other.com]"
            ),
            ["Warning [IST0132] (VirtualService prod/front) one or more host [edge.example.com other.com] defined in VirtualService prod/front not found in Gateway edge/shop-gateway."]
        );
        assert_eq!(
            gateway_lines("[edge/shop-gateway]", "['*.example.com']"),
            Vec::<String>::new(),
            "a wildcard overlapping a served host"
        );
    }

    #[test]
    fn gateway_names_and_host_overlap() {
        assert_eq!(gateway_name("ns/gw", "default"), ("ns", "gw"));
        assert_eq!(gateway_name("gw", "default"), ("default", "gw"));
        assert_eq!(
            gateway_name("gw.ns.svc.cluster.local", "default"),
            ("ns", "gw")
        );
        assert!(hosts_overlap("*", "a.b"));
        assert!(hosts_overlap("*.b.com", "*.a.b.com"));
        assert!(hosts_overlap("a.b.com", "*.b.com"));
        assert!(!hosts_overlap("a.b.com", "*.c.com"));
    }
}

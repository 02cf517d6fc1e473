//! What a workload can see: Istio's `exportTo`, the `Sidecar` that applies to it and that
//! Sidecar's egress hosts. The control plane filters each proxy's config with these and the
//! proxy applies the same rules to a config directory.

use crate::types::{self, Sidecar};
use crate::{host, Resource, Spec};
use std::collections::BTreeMap;

/// Istio's root namespace: a Sidecar without a selector here is the mesh-wide default.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Istio's `exportTo` (and, for Kubernetes Services, the `networking.istio.io/exportTo`
/// annotation): unset or `*` is every namespace, `.` the resource's own, else the names given.
/// The mesh's MeshConfig: the `mesh` key of ConfigMap `istio` in the root namespace.
pub fn mesh_config<'a>(
    resources: impl IntoIterator<Item = &'a Resource>,
) -> Option<&'a types::MeshConfig> {
    resources.into_iter().find_map(|r| match &r.spec {
        Spec::MeshConfig(m)
            if r.name() == types::mesh_config::MESH_CONFIG_MAP
                && r.namespace() == ROOT_NAMESPACE =>
        {
            Some(m)
        }
        _ => None,
    })
}

pub fn exported_to(r: &Resource, caller_namespace: &str) -> bool {
    let annotation;
    let export_to: &[String] = match &r.spec {
        Spec::VirtualService(vs) => &vs.export_to,
        Spec::DestinationRule(dr) => &dr.export_to,
        Spec::ServiceEntry(se) => &se.export_to,
        Spec::Service(_) => {
            annotation = r
                .metadata
                .annotations
                .get("networking.istio.io/exportTo")
                .map(|a| {
                    a.split(',')
                        .map(|s| s.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            &annotation
        }
        _ => &[],
    };
    export_to.is_empty()
        || export_to.iter().any(|e| {
            e == "*" || e == caller_namespace || (e == "." && r.namespace() == caller_namespace)
        })
}

/// The Sidecar that applies to a workload: one in its namespace whose selector matches it,
/// else its namespace's default (no selector), else the root namespace's default.
pub fn applicable_sidecar<'a, I>(
    resources: I,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<(&'a Resource, &'a Sidecar)>
where
    I: IntoIterator<Item = &'a Resource>,
{
    let (mut selecting, mut namespace_default, mut root_default) = (None, None, None);
    for r in resources {
        let Spec::Sidecar(sc) = &r.spec else { continue };
        match &sc.workload_selector {
            Some(s) if r.namespace() == namespace && types::labels_match(&s.labels, labels) => {
                selecting.get_or_insert((r, sc));
            }
            None if r.namespace() == namespace => {
                namespace_default.get_or_insert((r, sc));
            }
            None if r.namespace() == ROOT_NAMESPACE => {
                root_default.get_or_insert((r, sc));
            }
            _ => {}
        }
    }
    selecting.or(namespace_default).or(root_default)
}

/// The fully qualified hosts a resource is about: a VirtualService's hosts, a
/// DestinationRule's host, a ServiceEntry's hosts, a Service's name. Empty for other kinds.
pub fn hosts(r: &Resource) -> Vec<String> {
    let ns = r.namespace();
    match &r.spec {
        Spec::VirtualService(vs) => vs.hosts.iter().map(|h| host::fqdn(h, ns)).collect(),
        Spec::DestinationRule(dr) => vec![host::fqdn(&dr.host, ns)],
        Spec::ServiceEntry(se) => se.hosts.iter().map(|h| host::fqdn(h, ns)).collect(),
        Spec::Service(_) => vec![host::fqdn(r.name(), ns)],
        _ => Vec::new(),
    }
}

/// Whether a Sidecar's egress `hosts` (`namespace/dnsName`) admit, for a workload in
/// `workload_namespace`, a resource in `resource_namespace` about `hosts`. `.` is the
/// workload's namespace (also for the root namespace's default Sidecar). A Sidecar without
/// egress listeners admits everything, as Istio's default does.
pub fn egress_admits(
    sidecar: &Sidecar,
    workload_namespace: &str,
    resource_namespace: &str,
    hosts: &[String],
) -> bool {
    if sidecar.egress.is_empty() {
        return true;
    }
    egress_hosts(sidecar).any(|(ns, dns)| {
        namespace_matches(ns, workload_namespace, resource_namespace)
            && (dns == "*"
                || hosts.iter().any(|h| {
                    host::wildcard_matches(&host::fqdn(dns, resource_namespace), h)
                        || host::wildcard_matches(h, &host::fqdn(dns, resource_namespace))
                }))
    })
}

/// Whether some egress host of the Sidecar can admit a resource of `resource_namespace`,
/// whatever its hosts: `false` means [`egress_admits`] is false for every resource there.
pub fn egress_namespace_admits(
    sidecar: &Sidecar,
    workload_namespace: &str,
    resource_namespace: &str,
) -> bool {
    sidecar.egress.is_empty()
        || egress_hosts(sidecar)
            .any(|(ns, _)| namespace_matches(ns, workload_namespace, resource_namespace))
}

/// The egress hosts as (namespace, DNS name).
fn egress_hosts(sidecar: &Sidecar) -> impl Iterator<Item = (&str, &str)> {
    sidecar
        .egress
        .iter()
        .flat_map(|l| &l.hosts)
        .filter_map(|h| h.split_once('/'))
}

fn namespace_matches(pattern: &str, workload_namespace: &str, resource_namespace: &str) -> bool {
    match pattern {
        "*" => true,
        "~" => false,
        "." => resource_namespace == workload_namespace,
        ns => resource_namespace == ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(yaml: &str) -> Vec<Resource> {
        let loaded = crate::load_str(yaml, Path::new("t.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.resources
    }

    const SIDECARS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec: {egress: [{hosts: ["*/*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec: {egress: [{hosts: ["./*", "istio-system/*", "payments/*.payments.svc.cluster.local"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: shop}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress: [{hosts: ["./ratings.shop.svc.cluster.local"]}]
"#;

    #[test]
    fn the_most_specific_sidecar_applies() {
        let all = load(SIDECARS);
        let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
        let name =
            |ns, app| applicable_sidecar(&all, ns, &labels(app)).map(|(r, _)| r.display_name());
        assert_eq!(name("shop", "reviews").unwrap(), "Sidecar shop/reviews");
        assert_eq!(name("shop", "web").unwrap(), "Sidecar shop/default");
        assert_eq!(
            name("other", "web").unwrap(),
            "Sidecar istio-system/default"
        );
        assert!(applicable_sidecar(&all[1..], "other", &labels("web")).is_none());
    }

    #[test]
    fn egress_hosts_admit_by_namespace_and_name() {
        let all = load(SIDECARS);
        let sc = |i: usize| match &all[i].spec {
            Spec::Sidecar(sc) => sc,
            _ => unreachable!(),
        };
        let h = |s: &str| vec![s.to_string()];
        assert!(egress_admits(
            sc(1),
            "shop",
            "shop",
            &h("anything.shop.svc.cluster.local")
        ));
        assert!(egress_admits(
            sc(1),
            "shop",
            "payments",
            &h("card.payments.svc.cluster.local")
        ));
        assert!(!egress_admits(
            sc(1),
            "shop",
            "payments",
            &h("card.example.com")
        ));
        assert!(!egress_admits(
            sc(1),
            "shop",
            "billing",
            &h("x.billing.svc.cluster.local")
        ));
        assert!(egress_admits(
            sc(2),
            "shop",
            "shop",
            &h("ratings.shop.svc.cluster.local")
        ));
        assert!(!egress_admits(
            sc(2),
            "shop",
            "shop",
            &h("details.shop.svc.cluster.local")
        ));
        // A VirtualService for `*.shop.svc.cluster.local` concerns ratings too.
        assert!(egress_admits(
            sc(2),
            "shop",
            "shop",
            &h("*.shop.svc.cluster.local")
        ));
        assert!(egress_admits(
            sc(0),
            "istio-system",
            "any",
            &h("x.any.svc.cluster.local")
        ));
    }
}

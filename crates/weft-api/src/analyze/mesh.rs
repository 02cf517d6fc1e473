//! The resources as one analysis sees them, and the lookups the analyzers share: which hosts
//! exist for a namespace, which subsets a host has, which gateway a name refers to, which
//! workloads run where.

use super::{Input, Report, REDEFINED_RESOURCE};
use crate::host;
use crate::resource::{Kind, Resource, Spec};
use crate::types::{DestinationRule, Gateway, Service, ServiceEntry, VirtualService};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

pub(crate) struct Mesh<'a> {
    pub input: &'a Input,
    /// One resource per kind, namespace and name: the last definition, as kubectl apply and
    /// istioctl's file source keep it.
    pub resources: Vec<&'a Resource>,
    /// How many documents defined each of `resources`.
    definitions: Vec<usize>,
    /// Pods (from the input's workload controllers) and WorkloadEntries.
    pub workloads: Vec<Workload<'a>>,
}

/// Something that runs and can be an endpoint: its namespace and labels.
pub(crate) struct Workload<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> Mesh<'a> {
    pub fn new(input: &'a Input) -> Mesh<'a> {
        let mut position: HashMap<(Kind, &str, &str), usize> = HashMap::new();
        let mut resources: Vec<&Resource> = Vec::new();
        let mut definitions = Vec::new();
        for r in &input.resources {
            match position.entry((r.kind, r.namespace(), r.name())) {
                Entry::Occupied(at) => {
                    resources[*at.get()] = r;
                    definitions[*at.get()] += 1;
                }
                Entry::Vacant(at) => {
                    at.insert(resources.len());
                    resources.push(r);
                    definitions.push(1);
                }
            }
        }
        let pods = input.pods.iter().map(|p| Workload {
            namespace: &p.namespace,
            labels: &p.labels,
        });
        let workload_entries = resources.iter().filter_map(|r| match &r.spec {
            Spec::WorkloadEntry(we) => Some(Workload {
                namespace: r.namespace(),
                labels: &we.labels,
            }),
            _ => None,
        });
        let workloads = pods.chain(workload_entries).collect();
        Mesh {
            input,
            resources,
            definitions,
            workloads,
        }
    }

    fn specs<T: 'a>(
        &self,
        pick: fn(&'a Spec) -> Option<&'a T>,
    ) -> impl Iterator<Item = (&'a Resource, &'a T)> + '_ {
        self.resources
            .iter()
            .filter_map(move |r| pick(&r.spec).map(|spec| (*r, spec)))
    }

    pub fn virtual_services(
        &self,
    ) -> impl Iterator<Item = (&'a Resource, &'a VirtualService)> + '_ {
        self.specs(|s| match s {
            Spec::VirtualService(vs) => Some(vs),
            _ => None,
        })
    }

    pub fn destination_rules(
        &self,
    ) -> impl Iterator<Item = (&'a Resource, &'a DestinationRule)> + '_ {
        self.specs(|s| match s {
            Spec::DestinationRule(dr) => Some(dr),
            _ => None,
        })
    }

    pub fn service_entries(&self) -> impl Iterator<Item = (&'a Resource, &'a ServiceEntry)> + '_ {
        self.specs(|s| match s {
            Spec::ServiceEntry(se) => Some(se),
            _ => None,
        })
    }

    pub fn services(&self) -> impl Iterator<Item = (&'a Resource, &'a Service)> + '_ {
        self.specs(|s| match s {
            Spec::Service(svc) => Some(svc),
            _ => None,
        })
    }

    pub fn gateway(&self, namespace: &str, name: &str) -> Option<(&'a Resource, &'a Gateway)> {
        self.specs(|s| match s {
            Spec::Gateway(gw) => Some(gw),
            _ => None,
        })
        .find(|(r, _)| r.namespace() == namespace && r.name() == name)
    }

    /// The Kubernetes Services whose name is `fqdn`.
    pub fn services_named(
        &self,
        fqdn: &str,
    ) -> impl Iterator<Item = (&'a Resource, &'a Service)> + '_ {
        let fqdn = fqdn.to_string();
        self.services()
            .filter(move |(r, _)| host::fqdn(r.name(), r.namespace()) == fqdn)
    }

    /// The ServiceEntries with a host that is `fqdn` or a wildcard covering it.
    pub fn service_entries_for(
        &self,
        fqdn: &str,
    ) -> impl Iterator<Item = (&'a Resource, &'a ServiceEntry)> + '_ {
        let fqdn = fqdn.to_string();
        self.service_entries().filter(move |(r, se)| {
            se.hosts
                .iter()
                .any(|h| host::wildcard_matches(&host::fqdn(h, r.namespace()), &fqdn))
        })
    }

    /// True when a Service or ServiceEntry visible from `viewer` (by `exportTo`) provides
    /// `fqdn`.
    pub fn knows_host(&self, fqdn: &str, viewer: &str) -> bool {
        self.services_named(fqdn)
            .any(|(r, _)| exported_to(&service_export_to(r), r.namespace(), viewer))
            || self
                .service_entries_for(fqdn)
                .any(|(r, se)| exported_to(&se.export_to, r.namespace(), viewer))
    }

    /// True when a DestinationRule for `fqdn` (exactly, or by a wildcard host) defines
    /// `subset`.
    pub fn defines_subset(&self, fqdn: &str, subset: &str) -> bool {
        self.destination_rules().any(|(r, dr)| {
            host::wildcard_matches(&host::fqdn(&dr.host, r.namespace()), fqdn)
                && dr.subsets.iter().any(|s| s.name == subset)
        })
    }
}

/// A Kubernetes Service's `networking.istio.io/exportTo` annotation, as a list.
fn service_export_to(r: &Resource) -> Vec<String> {
    r.metadata
        .annotations
        .get("networking.istio.io/exportTo")
        .map(|v| {
            v.split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Istio's `host.Name.Matches`: some name is covered by both (either may be a wildcard).
pub(crate) fn hosts_overlap(a: &str, b: &str) -> bool {
    host::wildcard_matches(a, b) || host::wildcard_matches(b, a)
}

/// Istio's `exportTo`: empty or `*` is every namespace, `.` the owner's, `~` none.
pub(crate) fn exported_to(export_to: &[String], owner: &str, viewer: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == viewer || (e == "." && owner == viewer))
}

/// WEFT0003: a kind, namespace and name defined by more than one document. As with kubectl
/// apply of the same files, the last one wins, and it is the only one analyzed.
pub(crate) fn redefined(mesh: &Mesh<'_>, report: &mut Report) {
    for (r, &count) in mesh.resources.iter().zip(&mesh.definitions) {
        if count > 1 {
            let file = r.origin.file.file_name().map_or_else(
                || r.origin.file.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            );
            report.add(
                REDEFINED_RESOURCE,
                r,
                format!(
                    "defined {count} times in the input; the last definition ({file}, document {}) replaces the others, as with kubectl apply",
                    r.origin.document
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::test_support::*;

    #[test]
    fn the_last_definition_wins_and_is_reported() {
        let yaml = docs(&[
            REVIEWS_SERVICE,
            REVIEWS_RULE,
            &reviews_vs(
                "reviews",
                "  - route:\n    - destination: {host: reviews, subset: v9}\n",
            ),
            &reviews_vs(
                "reviews",
                "  - route:\n    - destination: {host: reviews, subset: v1}\n",
            ),
        ]);
        // Only the second VirtualService is analyzed: no IST0101 for v9, and no IST0109
        // between a resource and its own redefinition.
        assert_eq!(
            lines(&yaml),
            ["Warning [WEFT0003] (VirtualService default/reviews) defined 2 times in the input; the last definition (test.yaml, document 4) replaces the others, as with kubectl apply"]
        );
    }

    #[test]
    fn the_same_name_in_another_namespace_or_kind_is_another_resource() {
        let yaml = docs(&[
            REVIEWS_SERVICE,
            &REVIEWS_SERVICE.replace("name: reviews\n", "name: reviews\n  namespace: prod\n"),
            &REVIEWS_RULE.replace("subsets:\n", "exportTo: ['.']\n  subsets:\n"),
        ]);
        assert!(lines_with(&yaml, "WEFT0003").is_empty());
    }

    #[test]
    fn export_to_scopes_visibility() {
        let none: [String; 0] = [];
        assert!(exported_to(&none, "a", "b"));
        assert!(exported_to(&[".".into()], "a", "a"));
        assert!(!exported_to(&[".".into()], "a", "b"));
        assert!(exported_to(&["b".into()], "a", "b"));
        assert!(exported_to(&["*".into()], "a", "b"));
        assert!(!exported_to(&["~".into()], "a", "a"));
    }

    #[test]
    fn hosts_resolve_through_services_and_service_entries() {
        let yaml = docs(&[
            REVIEWS_SERVICE,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: private\n  namespace: prod\n  annotations: {networking.istio.io/exportTo: '.'}\nspec:\n  ports: [{name: http, port: 80}]\n",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: ext\nspec:\n  hosts: ['*.example.com', api.other.org]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: NONE\n",
        ]);
        let input = Input::from_yaml(&yaml, std::path::Path::new("t.yaml"));
        let mesh = Mesh::new(&input);
        assert!(mesh.knows_host("reviews.default.svc.cluster.local", "other"));
        assert!(mesh.knows_host("a.example.com", "default"));
        assert!(mesh.knows_host("api.other.org", "default"));
        assert!(!mesh.knows_host("example.com", "default"));
        assert!(mesh.knows_host("private.prod.svc.cluster.local", "prod"));
        assert!(!mesh.knows_host("private.prod.svc.cluster.local", "default"));
    }
}

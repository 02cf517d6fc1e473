//! IST0173: a DestinationRule subset whose labels select none of its host's workloads, so
//! traffic routed to it fails with 503 UH. WEFT0005: DestinationRules for one host that
//! Istio merges, where the merge leaves part of one out.
//!
//! A host's workloads are, for a Kubernetes Service, the pods (from the input's workload
//! controllers, as istioctl's file analysis makes them) and WorkloadEntries in its namespace
//! that its selector selects; for a ServiceEntry, its inline endpoints, plus the pods and
//! WorkloadEntries its `workloadSelector` selects. When the input declares no workload at
//! all, nothing can be said about endpoints (they live elsewhere: a cluster, `weft proxy
//! --labels`), and the analyzer stays silent rather than flag every subset.

use super::mesh::{Mesh, Workload};
use super::{Report, DESTINATION_RULE_SUBSET_NOT_SELECT_PODS, MERGED_DESTINATION_RULES};
use crate::destination_rules;
use crate::host;
use crate::types::labels_match;
use std::collections::BTreeMap;

type Labels = BTreeMap<String, String>;

/// The workloads behind a host: a selector over some candidates.
struct Backend<'a> {
    selector: &'a Labels,
    candidates: Vec<&'a Labels>,
}

impl Backend<'_> {
    fn selects_any(&self, subset: &Labels) -> bool {
        self.candidates
            .iter()
            .any(|labels| labels_match(self.selector, labels) && labels_match(subset, labels))
    }
}

/// Each rule whose subset or traffic policy the merge with older rules for its host drops.
pub(crate) fn merged(mesh: &Mesh<'_>, report: &mut Report) {
    for m in destination_rules::merge(mesh.resources.iter().copied()) {
        if m.ignored.is_empty() {
            continue;
        }
        let names: Vec<String> = m
            .from
            .iter()
            .map(|r| format!("{}/{}", r.namespace(), r.name()))
            .collect();
        for r in &m.from[1..] {
            let dropped: Vec<&str> = m
                .ignored
                .iter()
                .filter(|i| std::ptr::eq(i.rule, *r))
                .map(|i| i.what.as_str())
                .collect();
            if dropped.is_empty() {
                continue;
            }
            report.add(
                MERGED_DESTINATION_RULES,
                r,
                format!(
                    "DestinationRules {} apply to host {}: Istio merges them, the oldest first, and this one's {} is ignored because {} already defines it",
                    names.join(", "),
                    m.host,
                    dropped.join(", "),
                    names[0]
                ),
            );
        }
    }
}

pub(crate) fn unselected(mesh: &Mesh<'_>, report: &mut Report) {
    let endpoints = mesh
        .service_entries()
        .any(|(_, se)| !se.endpoints.is_empty());
    if mesh.workloads.is_empty() && !endpoints {
        return;
    }
    for (r, dr) in mesh.destination_rules() {
        let fqdn = host::fqdn(&dr.host, r.namespace());
        if dr.subsets.is_empty() || fqdn.starts_with('*') {
            continue;
        }
        let backends = backends(mesh, &fqdn);
        // A host nobody provides is another analyzer's business.
        if backends.is_empty() {
            continue;
        }
        for subset in &dr.subsets {
            if !backends.iter().any(|b| b.selects_any(&subset.labels)) {
                report.add(
                    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
                    r,
                    format!(
                        "The Subset {} defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
                        subset.name
                    ),
                );
            }
        }
    }
}

fn backends<'a>(mesh: &Mesh<'a>, fqdn: &str) -> Vec<Backend<'a>> {
    let in_namespace = |namespace: &str| -> Vec<&'a Labels> {
        mesh.workloads
            .iter()
            .filter(|w: &&Workload<'a>| w.namespace == namespace)
            .map(|w| w.labels)
            .collect()
    };
    let mut backends = Vec::new();
    // A Service without a selector has no endpoints Kubernetes manages; skip it.
    for (r, svc) in mesh.services_named(fqdn) {
        if !svc.selector.is_empty() {
            backends.push(Backend {
                selector: &svc.selector,
                candidates: in_namespace(r.namespace()),
            });
        }
    }
    static NO_SELECTOR: Labels = Labels::new();
    for (r, se) in mesh.service_entries_for(fqdn) {
        backends.push(Backend {
            selector: &NO_SELECTOR,
            candidates: se.endpoints.iter().map(|e| &e.labels).collect(),
        });
        if let Some(selector) = &se.workload_selector {
            backends.push(Backend {
                selector: &selector.labels,
                candidates: in_namespace(r.namespace()),
            });
        }
    }
    backends
}

#[cfg(test)]
mod tests {
    use crate::analyze::test_support::*;

    const V4_RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v4, labels: {version: v4}}\n";

    fn unselected(documents: &[&str]) -> Vec<String> {
        lines_with(&docs(documents), "IST0173")
    }

    #[test]
    fn a_subset_no_pod_carries_is_ist0173() {
        assert_eq!(
            unselected(&[REVIEWS_SERVICE, V4_RULE, &reviews_deployment("v1")]),
            ["Error [IST0173] (DestinationRule default/reviews) The Subset v4 defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream)."]
        );
    }

    #[test]
    fn pods_must_match_the_service_selector_and_namespace() {
        let other_app = reviews_deployment("v4").replace("app: reviews", "app: ratings");
        let other_namespace = reviews_deployment("v4").replace(
            "name: reviews-v4\n",
            "name: reviews-v4\n  namespace: prod\n",
        );
        for deployment in [other_app, other_namespace] {
            assert_eq!(
                unselected(&[
                    REVIEWS_SERVICE,
                    V4_RULE,
                    &reviews_deployment("v1"),
                    &deployment
                ])
                .len(),
                1,
                "{deployment}"
            );
        }
    }

    #[test]
    fn workload_entries_and_service_entry_endpoints_are_workloads() {
        let we = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: reviews-vm\nspec:\n  address: 10.0.0.4\n  labels: {app: reviews, version: v4}\n";
        assert_eq!(
            unselected(&[REVIEWS_SERVICE, V4_RULE, &reviews_deployment("v1"), we]),
            Vec::<String>::new()
        );
        let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: db\nspec:\n  hosts: [db.example.com]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints:\n  - {address: 10.0.0.7, labels: {role: primary}}\n";
        let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: db\nspec:\n  host: db.example.com\n  subsets:\n  - {name: primary, labels: {role: primary}}\n  - {name: replica, labels: {role: replica}}\n";
        assert_eq!(
            unselected(&[se, rule]),
            ["Error [IST0173] (DestinationRule default/db) The Subset replica defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream)."]
        );
    }

    #[test]
    fn without_any_workload_in_the_input_nothing_is_reported() {
        assert_eq!(
            unselected(&[REVIEWS_SERVICE, V4_RULE]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn rules_for_unknown_or_wildcard_hosts_are_skipped() {
        let rule = V4_RULE.replace("host: reviews", "host: '*.example.com'");
        assert_eq!(
            unselected(&[&rule, &reviews_deployment("v1")]),
            Vec::<String>::new()
        );
        let rule = V4_RULE.replace("host: reviews", "host: nowhere");
        assert_eq!(
            unselected(&[&rule, &reviews_deployment("v1")]),
            Vec::<String>::new()
        );
    }
}

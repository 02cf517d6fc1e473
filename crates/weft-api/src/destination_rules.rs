//! Which DestinationRule is in force for a host, as Istio decides (`mergeDestinationRule`
//! in pilot). Rules of one namespace for the same host and the same workload selector are
//! merged, oldest first (`metadata.creationTimestamp`, then name): the subsets of all of
//! them, a repeated subset name keeping the first; the top-level `trafficPolicy` of the
//! first that has one; `exportTo` of the first. Between the merged rules, the caller's
//! own namespace comes first, then an exact host, then the longest wildcard.

use crate::host;
use crate::resource::{Resource, Spec};
use crate::types::DestinationRule;
use std::collections::BTreeMap;

/// The rule in force for one (namespace, host, selector), and what it was made of.
#[derive(Debug, Clone)]
pub struct MergedRule<'a> {
    /// The fully-qualified host.
    pub host: String,
    pub namespace: &'a str,
    pub rule: DestinationRule,
    /// The rules merged, oldest first; the first is the base.
    pub from: Vec<&'a Resource>,
    /// What the merge left out of the younger rules.
    pub ignored: Vec<Ignored<'a>>,
}

/// A part of a rule that an older rule for the same host already defines.
#[derive(Debug, Clone)]
pub struct Ignored<'a> {
    /// `subset v2`, `trafficPolicy`.
    pub what: String,
    pub rule: &'a Resource,
}

impl std::fmt::Display for Ignored<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {}/{}",
            self.what,
            self.rule.namespace(),
            self.rule.name()
        )
    }
}

impl MergedRule<'_> {
    /// `DestinationRule ns/name` of each rule merged, oldest first.
    pub fn names(&self) -> Vec<String> {
        self.from.iter().map(|r| r.display_name()).collect()
    }
}

/// Merges the DestinationRules among `resources` as Istio does.
pub fn merge<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Vec<MergedRule<'a>> {
    // (namespace, host, workload selector): Istio merges only rules alike in all three.
    type Group<'a> = (&'a str, String, String);
    let mut groups: BTreeMap<Group<'a>, Vec<(&'a Resource, &'a DestinationRule)>> = BTreeMap::new();
    for r in resources {
        if let Spec::DestinationRule(dr) = &r.spec {
            let selector = dr
                .workload_selector
                .as_ref()
                .map(|s| format!("{:?}", s.match_labels))
                .unwrap_or_default();
            let key = (r.namespace(), host::fqdn(&dr.host, r.namespace()), selector);
            groups.entry(key).or_default().push((r, dr));
        }
    }
    groups
        .into_iter()
        .map(|((namespace, host, _), mut rules)| {
            rules.sort_by(|(a, _), (b, _)| {
                let created = |r: &Resource| r.metadata.creation_timestamp.clone();
                created(a)
                    .cmp(&created(b))
                    .then_with(|| a.name().cmp(b.name()))
            });
            let (first, base) = rules[0];
            let mut merged = MergedRule {
                host,
                namespace,
                rule: base.clone(),
                from: vec![first],
                ignored: Vec::new(),
            };
            for &(r, dr) in &rules[1..] {
                merged.from.push(r);
                let ignore = |what: String| Ignored { what, rule: r };
                for subset in &dr.subsets {
                    if merged.rule.subsets.iter().any(|s| s.name == subset.name) {
                        merged
                            .ignored
                            .push(ignore(format!("subset {}", subset.name)));
                    } else {
                        merged.rule.subsets.push(subset.clone());
                    }
                }
                match (&merged.rule.traffic_policy, &dr.traffic_policy) {
                    (None, Some(p)) => merged.rule.traffic_policy = Some(p.clone()),
                    (Some(_), Some(_)) => merged.ignored.push(ignore("trafficPolicy".into())),
                    _ => {}
                }
            }
            merged
        })
        .collect()
}

/// The merged rules that apply to `hostname` for a caller in `namespace`, the one in force
/// first. Leave out beforehand the rules whose `workloadSelector` does not select the caller
/// ([`DestinationRule::selects`]).
pub fn applicable<'m, 'a>(
    merged: &'m [MergedRule<'a>],
    hostname: &str,
    namespace: &str,
) -> Vec<&'m MergedRule<'a>> {
    let mut found: Vec<&MergedRule> = merged
        .iter()
        .filter(|m| {
            m.host == hostname
                || (m.host.starts_with('*') && host::wildcard_matches(&m.host, hostname))
        })
        .collect();
    // A rule with a workloadSelector (the caller has kept only those selecting it) wins
    // over its namespace's rule without one.
    found.sort_by_key(|m| {
        (
            m.host != hostname,
            m.namespace != namespace,
            m.rule.workload_selector.is_none(),
            std::cmp::Reverse(m.host.len()),
        )
    });
    found
}

/// The merged rule in force for `hostname` for a caller in `namespace`.
pub fn in_force<'m, 'a>(
    merged: &'m [MergedRule<'a>],
    hostname: &str,
    namespace: &str,
) -> Option<&'m MergedRule<'a>> {
    applicable(merged, hostname, namespace).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;
    use std::path::Path;

    fn rules(yaml: &str) -> Vec<Resource> {
        let loaded = load_str(yaml, Path::new("dr.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.resources
    }

    const SUBSETS_THEN_POOL: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-subsets, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-pool, creationTimestamp: '2026-01-02T00:00:00Z'}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
  subsets:
  - {name: v2, labels: {version: other}}
  - {name: v3, labels: {version: v3}}
";

    #[test]
    fn rules_for_one_host_merge_oldest_first() {
        let all = rules(SUBSETS_THEN_POOL);
        let merged = merge(&all);
        assert_eq!(merged.len(), 1);
        let m = &merged[0];
        // Created first, though its name sorts last.
        assert_eq!(
            m.names(),
            [
                "DestinationRule default/reviews-subsets",
                "DestinationRule default/a-pool"
            ]
        );
        let subsets: Vec<(&str, &str)> = m
            .rule
            .subsets
            .iter()
            .map(|s| (s.name.as_str(), s.labels["version"].as_str()))
            .collect();
        assert_eq!(subsets, [("v1", "v1"), ("v2", "v2"), ("v3", "v3")]);
        // The first had no trafficPolicy: the second's is taken.
        let pool = m
            .rule
            .traffic_policy
            .as_ref()
            .unwrap()
            .connection_pool
            .as_ref();
        assert_eq!(pool.unwrap().tcp.as_ref().unwrap().max_connections, Some(7));
        let ignored: Vec<String> = m.ignored.iter().map(ToString::to_string).collect();
        assert_eq!(ignored, ["subset v2 of default/a-pool"]);
    }

    #[test]
    fn the_first_top_level_policy_wins_and_namespaces_do_not_merge() {
        let yaml = format!(
            "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: late, creationTimestamp: '2026-02-01T00:00:00Z'}}\nspec:\n  host: reviews\n  trafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: other}}\nspec:\n  host: reviews.default.svc.cluster.local\n",
            SUBSETS_THEN_POOL
        );
        let all = rules(&yaml);
        let merged = merge(&all);
        assert_eq!(merged.len(), 2);
        let here = in_force(&merged, "reviews.default.svc.cluster.local", "default").unwrap();
        assert_eq!(here.from.len(), 3);
        assert!(here
            .rule
            .traffic_policy
            .as_ref()
            .unwrap()
            .load_balancer
            .is_none());
        let ignored: Vec<String> = here.ignored.iter().map(ToString::to_string).collect();
        assert_eq!(
            ignored,
            [
                "subset v2 of default/a-pool",
                "trafficPolicy of default/late"
            ]
        );
        // A caller in `other` gets its own namespace's rule first.
        let there = in_force(&merged, "reviews.default.svc.cluster.local", "other").unwrap();
        assert_eq!(there.namespace, "other");
    }
}

//! Which mTLS mode a workload's sidecar takes from its callers, composed from the
//! PeerAuthentications as Istio composes them (`ComposePeerAuthentication` in pilot).
//!
//! Three levels count: the root namespace's policy without a selector (mesh-wide), the
//! workload's namespace's without a selector, and one in that namespace whose selector
//! matches the workload. A policy with a selector in the root namespace applies to nothing.
//! At each level the oldest policy wins (`metadata.creationTimestamp`, then name). A mode
//! left UNSET inherits the level above; with no policy at all the mode is PERMISSIVE. The
//! workload's `portLevelMtls` overrides its mode per port, UNSET there inheriting the
//! workload's.

use crate::resource::{Resource, Spec};
use crate::scope::ROOT_NAMESPACE;
use crate::types::{labels_match, MtlsMode, PeerAuthentication};
use serde::Serialize;
use std::collections::BTreeMap;

/// A mode and the policy that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decided {
    pub mode: MtlsMode,
    /// `PeerAuthentication ns/name`; `None` for Istio's default, PERMISSIVE.
    pub by: Option<String>,
}

/// The mTLS in force for one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveMtls {
    pub workload: Decided,
    /// The workload policy's `portLevelMtls`, by the workload's port.
    pub ports: BTreeMap<u16, Decided>,
}

impl Default for EffectiveMtls {
    fn default() -> EffectiveMtls {
        EffectiveMtls {
            workload: Decided {
                mode: MtlsMode::Permissive,
                by: None,
            },
            ports: BTreeMap::new(),
        }
    }
}

impl EffectiveMtls {
    /// The mode for a connection to the workload's `port`.
    pub fn for_port(&self, port: u16) -> &Decided {
        self.ports.get(&port).unwrap_or(&self.workload)
    }

    /// Whether every port is in `mode`.
    pub fn all(&self, mode: MtlsMode) -> bool {
        self.workload.mode == mode && self.ports.values().all(|d| d.mode == mode)
    }
}

/// Composes the PeerAuthentications among `resources` for a workload in `namespace` with
/// `labels`.
pub fn effective<'a>(
    resources: impl IntoIterator<Item = &'a Resource>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> EffectiveMtls {
    let mut levels: [Option<(&Resource, &PeerAuthentication)>; 3] = [None, None, None];
    for r in resources {
        let Spec::PeerAuthentication(pa) = &r.spec else {
            continue;
        };
        let level = match (pa.selector_labels(), r.namespace()) {
            (None, ns) if ns == ROOT_NAMESPACE => 0,
            (None, ns) if ns == namespace => 1,
            (Some(selector), ns) if ns == namespace && ns != ROOT_NAMESPACE => {
                if !labels_match(selector, labels) {
                    continue;
                }
                2
            }
            _ => continue,
        };
        let older = |held: &Resource| {
            (&r.metadata.creation_timestamp, r.name())
                < (&held.metadata.creation_timestamp, held.name())
        };
        if levels[level].is_none_or(|(held, _)| older(held)) {
            levels[level] = Some((r, pa));
        }
    }
    let mut out = EffectiveMtls::default();
    for (r, pa) in levels.iter().flatten() {
        if let Some(mode) = pa.mtls.as_ref().and_then(|m| m.mode()) {
            out.workload = Decided {
                mode,
                by: Some(r.display_name()),
            };
        }
    }
    if let Some((r, pa)) = levels[2] {
        for (port, mtls) in pa.port_level_mtls.iter().flatten() {
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let decided = match mtls.mode() {
                Some(mode) => Decided {
                    mode,
                    by: Some(r.display_name()),
                },
                None => out.workload.clone(),
            };
            out.ports.insert(port, decided);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_str;
    use std::path::Path;

    fn resources(yaml: &str) -> Vec<Resource> {
        let loaded = load_str(yaml, Path::new("test.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        loaded.resources
    }

    fn policy(ns: &str, name: &str, created: &str, body: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\n  creationTimestamp: \"{created}\"\nspec:\n{body}\n---\n"
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn without_policies_the_mode_is_permissive() {
        let got = effective(&[], "default", &labels(&[("app", "a")]));
        assert_eq!(got, EffectiveMtls::default());
        assert_eq!(got.for_port(9080).mode, MtlsMode::Permissive);
    }

    #[test]
    fn workload_over_namespace_over_mesh() {
        let t = "2026-01-01T00:00:00Z";
        let mesh = policy("istio-system", "default", t, "  mtls:\n    mode: STRICT");
        let ns = policy("default", "default", t, "  mtls:\n    mode: PERMISSIVE");
        let wl = policy(
            "default",
            "reviews",
            t,
            "  selector:\n    matchLabels:\n      app: reviews\n  mtls:\n    mode: DISABLE",
        );
        let all = resources(&format!("{mesh}{ns}{wl}"));
        let decided = |namespace: &str, app: &str| {
            effective(&all, namespace, &labels(&[("app", app)])).workload
        };
        assert_eq!(decided("other", "x").mode, MtlsMode::Strict);
        assert_eq!(
            decided("other", "x").by.as_deref(),
            Some("PeerAuthentication istio-system/default")
        );
        assert_eq!(decided("default", "ratings").mode, MtlsMode::Permissive);
        assert_eq!(decided("default", "reviews").mode, MtlsMode::Disable);
        assert_eq!(
            decided("default", "reviews").by.as_deref(),
            Some("PeerAuthentication default/reviews")
        );
    }

    #[test]
    fn unset_inherits_and_ports_override() {
        let t = "2026-01-01T00:00:00Z";
        let ns = policy("default", "default", t, "  mtls:\n    mode: STRICT");
        let wl = policy(
            "default",
            "reviews",
            t,
            "  selector:\n    matchLabels:\n      app: reviews\n  mtls:\n    mode: UNSET\n  portLevelMtls:\n    \"9080\":\n      mode: DISABLE\n    \"9081\":\n      mode: UNSET",
        );
        let all = resources(&format!("{ns}{wl}"));
        let got = effective(&all, "default", &labels(&[("app", "reviews")]));
        assert_eq!(got.workload.mode, MtlsMode::Strict);
        assert_eq!(
            got.workload.by.as_deref(),
            Some("PeerAuthentication default/default")
        );
        assert_eq!(got.for_port(9080).mode, MtlsMode::Disable);
        assert_eq!(got.for_port(9081).mode, MtlsMode::Strict);
        assert_eq!(got.for_port(15000).mode, MtlsMode::Strict);
        assert!(!got.all(MtlsMode::Strict));
    }

    #[test]
    fn the_oldest_policy_of_a_level_wins_and_root_selectors_apply_to_nothing() {
        let older = policy(
            "default",
            "b",
            "2026-01-01T00:00:00Z",
            "  mtls:\n    mode: STRICT",
        );
        let newer = policy(
            "default",
            "a",
            "2026-02-01T00:00:00Z",
            "  mtls:\n    mode: DISABLE",
        );
        let root_selected = policy(
            "istio-system",
            "selected",
            "2026-01-01T00:00:00Z",
            "  selector:\n    matchLabels:\n      app: x\n  mtls:\n    mode: DISABLE",
        );
        let all = resources(&format!("{newer}{older}{root_selected}"));
        let got = effective(&all, "default", &labels(&[("app", "x")]));
        assert_eq!(got.workload.mode, MtlsMode::Strict);
        assert_eq!(
            got.workload.by.as_deref(),
            Some("PeerAuthentication default/b")
        );
        let elsewhere = effective(&all, "other", &labels(&[("app", "x")]));
        assert_eq!(elsewhere, EffectiveMtls::default());
    }
}

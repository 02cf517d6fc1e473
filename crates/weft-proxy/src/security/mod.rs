//! Who may reach this workload: Istio's request authentication (JWTs) and authorization
//! policies, compiled per config version and checked on every inbound request and
//! connection.

pub mod authz;
pub mod ext_authz;
pub mod jwt;

use std::collections::BTreeMap;
use weft_api::scope::ROOT_NAMESPACE;
use weft_api::types::labels_match;
use weft_api::Resource;

/// Whether a security policy (`r`, with its `selector` labels and whether it names
/// `targetRefs`) applies to a workload in `namespace` with `labels`: one of its own
/// namespace's or the root namespace's, selecting it or every workload. `targetRefs` attach
/// to Gateway API gateways and waypoints, which Weft does not run.
pub(crate) fn applies(
    r: &Resource,
    selector: Option<&BTreeMap<String, String>>,
    target_refs: bool,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    (r.namespace() == namespace || r.namespace() == ROOT_NAMESPACE)
        && !target_refs
        && selector.is_none_or(|s| labels_match(s, labels))
}

//! The workload a proxy stands beside, as Istio's sidecar knows its pod.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
}

impl Workload {
    /// `app` and `version` as Istio's canonical service and revision.
    pub fn app(&self) -> &str {
        self.label("app")
    }

    pub fn version(&self) -> &str {
        self.label("version")
    }

    fn label(&self, key: &str) -> &str {
        self.labels
            .get(key)
            .map(String::as_str)
            .unwrap_or("unknown")
    }
}

/// Parses `app=reviews,version=v2` into labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!(
                "label {kv:?} is not key=value (e.g. app=reviews,version=v2)"
            )),
        })
        .collect()
}

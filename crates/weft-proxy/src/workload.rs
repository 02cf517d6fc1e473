//! The workload a proxy stands beside, as Istio's sidecar knows its pod.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The workload's name, as Istio's `WORKLOAD_NAME`: the Deployment's, not the pod's.
    pub name: String,
    /// The pod's name; empty: the workload's.
    pub pod: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Istio's `INSTANCE_IP`; empty when not known.
    pub instance_ip: String,
}

impl Workload {
    pub fn pod_name(&self) -> &str {
        if self.pod.is_empty() {
            &self.name
        } else {
            &self.pod
        }
    }

    pub fn canonical_service(&self) -> &str {
        canonical_service(&self.labels).unwrap_or(&self.name)
    }

    pub fn canonical_revision(&self) -> &str {
        canonical_revision(&self.labels)
    }
}

/// Istio's canonical service: its label, else `app.kubernetes.io/name`, else `app`; the
/// caller falls back to the workload's name.
pub fn canonical_service(labels: &BTreeMap<String, String>) -> Option<&str> {
    first_label(
        labels,
        &[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ],
    )
}

/// Istio's canonical revision: its label, else `app.kubernetes.io/version`, else `version`,
/// else `latest`.
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> &str {
    first_label(
        labels,
        &[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ],
    )
    .unwrap_or("latest")
}

fn first_label<'l>(labels: &'l BTreeMap<String, String>, keys: &[&str]) -> Option<&'l str> {
    keys.iter().find_map(|k| labels.get(*k)).map(String::as_str)
}

/// Parses `app=reviews,version=v2` into labels.
/// Labels as Kubernetes' downward API writes them to a file: one `key="value"` a line, the
/// value quoted as Go quotes strings.
pub fn parse_downward_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let bad = || format!("{line:?} is not key=\"value\"");
            let (key, quoted) = line.split_once('=').ok_or_else(bad)?;
            let inner = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .ok_or_else(bad)?;
            let mut value = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match (c, c == '\\') {
                    (_, true) => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('t') => value.push('\t'),
                        Some(other) => value.push(other),
                        None => return Err(bad()),
                    },
                    (c, false) => value.push(c),
                }
            }
            Ok((key.trim().to_string(), value))
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_api_labels_are_read_as_kubernetes_writes_them() {
        let text =
            "app=\"reviews\"\nsecurity.istio.io/tlsMode=\"istio\"\nnote=\"say \\\"hi\\\"\\n\"\n";
        let labels = parse_downward_labels(text).unwrap();
        assert_eq!(labels["app"], "reviews");
        assert_eq!(labels["security.istio.io/tlsMode"], "istio");
        assert_eq!(labels["note"], "say \"hi\"\n");
        assert!(parse_downward_labels("app=reviews")
            .unwrap_err()
            .contains("key=\"value\""));
    }
}

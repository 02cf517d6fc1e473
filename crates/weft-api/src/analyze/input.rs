//! What the analyzers read: the loaded resources and diagnostics, plus the pods that the
//! input's Kubernetes workloads would run.
//!
//! Deployments and Pods are not Weft resources (the loader skips them with a warning), but
//! whether a DestinationRule subset selects anything depends on them. istioctl's file source
//! turns each Deployment's pod template into one stand-in pod; Weft does the same, for the
//! other pod-template kinds too, by re-reading exactly the documents the loader skipped.

use crate::load::{load_path, load_str, split_documents, Diagnostic, LoadError};
use crate::resource::{Origin, Resource};
use crate::validate::Severity;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything one analysis looks at.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
    /// The pods the input's Pods and workload controllers (Deployments…) stand for.
    pub pods: Vec<Pod>,
}

/// A pod, or the pod template of a workload controller, as far as analysis needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// `Deployment default/reviews-v1`: the object the pod comes from.
    pub owner: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub origin: Origin,
}

/// Kinds that run pods, and where their pod template sits (a JSON pointer; the Pod itself is
/// its own template).
const POD_TEMPLATES: [(&str, &str); 7] = [
    ("Pod", ""),
    ("Deployment", "/spec/template"),
    ("StatefulSet", "/spec/template"),
    ("DaemonSet", "/spec/template"),
    ("ReplicaSet", "/spec/template"),
    ("Job", "/spec/template"),
    ("CronJob", "/spec/jobTemplate/spec/template"),
];

impl Input {
    /// Loads files and directories as `weft validate -f` does, in the order given.
    pub fn load(paths: &[PathBuf]) -> Result<Input, LoadError> {
        let mut input = Input::default();
        for path in paths {
            let loaded = load_path(path)?;
            input.resources.extend(loaded.resources);
            input.diagnostics.extend(loaded.diagnostics);
        }
        for (file, documents) in skipped_documents(&input.diagnostics) {
            let text = std::fs::read_to_string(file.as_path()).map_err(|source| LoadError::Io {
                path: file.to_path_buf(),
                source,
            })?;
            input.pods.extend(pods_in(&text, &file, &documents));
        }
        Ok(input)
    }

    /// Loads one file's text; `file` names it in messages.
    pub fn from_yaml(text: &str, file: &Path) -> Input {
        let loaded = load_str(text, file);
        let pods = skipped_documents(&loaded.diagnostics)
            .iter()
            .flat_map(|(file, documents)| pods_in(text, file, documents))
            .collect();
        Input {
            resources: loaded.resources,
            diagnostics: loaded.diagnostics,
            pods,
        }
    }
}

/// The documents the loader skipped because their kind is not a Weft resource, by file.
fn skipped_documents(diagnostics: &[Diagnostic]) -> BTreeMap<Arc<PathBuf>, BTreeSet<usize>> {
    let mut skipped: BTreeMap<Arc<PathBuf>, BTreeSet<usize>> = BTreeMap::new();
    for d in diagnostics {
        if d.severity == Severity::Warning && d.path == "kind" {
            skipped
                .entry(d.origin.file.clone())
                .or_default()
                .insert(d.origin.document);
        }
    }
    skipped
}

/// The pods in the given documents (1-based, as [`Origin::document`]) of one file's text.
fn pods_in(text: &str, file: &Arc<PathBuf>, documents: &BTreeSet<usize>) -> Vec<Pod> {
    let all = split_documents(text);
    let mut pods = Vec::new();
    for &document in documents {
        let Some(&(line, doc)) = all.get(document.wrapping_sub(1)) else {
            continue;
        };
        // A document that does not parse was already reported by the loader.
        if let Ok(value) = serde_norway::from_str::<Value>(doc) {
            let origin = Origin {
                file: file.clone(),
                document,
                line,
            };
            collect(&value, &origin, &mut pods);
        }
    }
    pods
}

fn collect(object: &Value, origin: &Origin, pods: &mut Vec<Pod>) {
    let kind = object["kind"].as_str().unwrap_or_default();
    if kind == "List" {
        for item in object["items"].as_array().into_iter().flatten() {
            collect(item, origin, pods);
        }
        return;
    }
    let Some((_, pointer)) = POD_TEMPLATES.iter().find(|(k, _)| *k == kind) else {
        return;
    };
    let Some(template) = object.pointer(pointer) else {
        return;
    };
    let metadata = &object["metadata"];
    let namespace = template["metadata"]["namespace"]
        .as_str()
        .or(metadata["namespace"].as_str())
        .unwrap_or("default");
    let labels = template["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), String::from),
            )
        })
        .collect();
    pods.push(Pod {
        owner: format!(
            "{kind} {namespace}/{}",
            metadata["name"].as_str().unwrap_or_default()
        ),
        namespace: namespace.to_string(),
        labels,
        origin: origin.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_templates_stand_for_their_pods() {
        let yaml = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: bookinfo-reviews\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: reviews-v2\n  namespace: shop\n  labels: {app: reviews}\nspec:\n  template:\n    metadata:\n      labels: {app: reviews, version: v2}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: debug, labels: {app: debug, rev: 1}}\n- apiVersion: batch/v1\n  kind: CronJob\n  metadata: {name: nightly}\n  spec:\n    jobTemplate:\n      spec:\n        template:\n          metadata: {labels: {app: nightly}}\n";
        let input = Input::from_yaml(yaml, Path::new("apps.yaml"));
        let pods: Vec<String> = input
            .pods
            .iter()
            .map(|p| {
                format!(
                    "{} in {} {:?} at line {}",
                    p.owner, p.namespace, p.labels, p.origin.line
                )
            })
            .collect();
        assert_eq!(
            pods,
            [
                r#"Deployment shop/reviews-v2 in shop {"app": "reviews", "version": "v2"} at line 6"#,
                r#"Pod default/debug in default {"app": "debug", "rev": "1"} at line 17"#,
                r#"CronJob default/nightly in default {"app": "nightly"} at line 17"#,
            ]
        );
        assert!(input.resources.is_empty());
    }

    #[test]
    fn loading_from_files_finds_the_same_pods() {
        let dir = std::env::temp_dir().join(format!("weft-analyze-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: r\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: r-v1\nspec:\n  template:\n    metadata:\n      labels: {app: r}\n";
        std::fs::write(dir.join("mesh.yaml"), yaml).expect("write");
        let input = Input::load(std::slice::from_ref(&dir)).expect("load");
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(input.resources.len(), 1);
        assert_eq!(input.pods.len(), 1);
        assert_eq!(input.pods[0].owner, "Deployment default/r-v1");
        assert_eq!(input.pods[0].origin.document, 2);
    }
}

//! `weft install`, as `istioctl install`: the manifest applied with server-side apply
//! (field manager `weft`, taking over fields others set, as istioctl does), CRDs first,
//! then a wait until every Deployment is available, with progress as it goes.

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use kube::{Api, Client};
use serde_json::Value;
use std::time::Duration;

pub const FIELD_MANAGER: &str = "weft";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what}: the API server does not serve {gvk}: {source}")]
    Discovery {
        what: String,
        gvk: String,
        source: kube::Error,
    },
    #[error("cannot apply {what}: {source}")]
    Apply { what: String, source: kube::Error },
    #[error("{what} did not become available within {within:?}; see kubectl -n {namespace} describe {what}")]
    NotReady {
        what: String,
        namespace: String,
        within: Duration,
    },
}

/// What `install` reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Applied(String),
    Waiting {
        what: String,
        ready: i64,
        wanted: i64,
    },
    Ready(String),
}

/// `kind/name` as kubectl prints it.
fn display(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or_default().to_lowercase(),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Applies `objects` in order, then waits up to `within` for their Deployments.
pub async fn install(
    client: &Client,
    objects: &[Value],
    within: Duration,
    mut progress: impl FnMut(Progress),
) -> Result<(), InstallError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut deployments = Vec::new();
    for object in objects {
        let what = display(object);
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk =
            GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap_or_default());
        let (resource, capabilities) =
            pinned_kind(client, &gvk)
                .await
                .map_err(|source| InstallError::Discovery {
                    what: what.clone(),
                    gvk: format!("{api_version} {}", gvk.kind),
                    source,
                })?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"].as_str();
        let api = api_for(client, &resource, capabilities.scope, namespace);
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| InstallError::Apply {
                what: what.clone(),
                source,
            })?;
        progress(Progress::Applied(what.clone()));
        if gvk.kind == "Deployment" {
            deployments.push((
                api,
                name.to_string(),
                namespace.unwrap_or("default").to_string(),
                what,
            ));
        }
    }
    let deadline = tokio::time::Instant::now() + within;
    for (api, name, namespace, what) in deployments {
        let mut last = None;
        loop {
            let (ready, wanted) = match api.get(&name).await {
                Ok(d) => availability(&d),
                Err(_) => (0, 1),
            };
            if ready >= wanted {
                progress(Progress::Ready(what.clone()));
                break;
            }
            if last != Some(ready) {
                progress(Progress::Waiting {
                    what: what.clone(),
                    ready,
                    wanted,
                });
                last = Some(ready);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(InstallError::NotReady {
                    what,
                    namespace,
                    within,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

fn api_for(
    client: &Client,
    resource: &ApiResource,
    scope: Scope,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, resource),
        (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), resource),
        (Scope::Cluster, _) => Api::all_with(client.clone(), resource),
    }
}

/// A Deployment's available replicas against those it asks for.
fn availability(d: &DynamicObject) -> (i64, i64) {
    let wanted = d.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = d.data["status"]["availableReplicas"].as_i64().unwrap_or(0);
    (ready, wanted)
}

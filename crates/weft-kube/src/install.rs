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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{self, query, try_next};
    use http::Method;
    use serde_json::json;

    /// The manifest's kinds that are not namespaced, as the API server's discovery says.
    const CLUSTER_SCOPED: [&str; 5] = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
    ];

    fn plural(kind: &str) -> String {
        format!("{}s", kind.to_lowercase())
    }

    /// Where an object lives: `/api/v1` or `/apis/GROUP/VERSION`, then its namespace if
    /// its kind has one.
    fn path_of(o: &Value) -> String {
        let api_version = o["apiVersion"].as_str().unwrap();
        let kind = o["kind"].as_str().unwrap();
        let group_version = match api_version.contains('/') {
            true => format!("/apis/{api_version}"),
            false => format!("/api/{api_version}"),
        };
        let namespace = match CLUSTER_SCOPED.contains(&kind) {
            true => String::new(),
            // Where Weft lands is the manifest's to say, not the kubeconfig context's.
            false => format!(
                "/namespaces/{}",
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a {kind} with no namespace"))
            ),
        };
        format!(
            "{group_version}{namespace}/{}/{}",
            plural(kind),
            o["metadata"]["name"].as_str().unwrap()
        )
    }

    /// The discovery document of one group version (`/api/v1`, `/apis/apps/v1`): the kinds
    /// the manifest has in it.
    fn discovery(objects: &[Value], path: &str) -> Value {
        let group_version = path
            .strip_prefix("/apis/")
            .or(path.strip_prefix("/api/"))
            .unwrap();
        let mut resources: Vec<Value> = objects
            .iter()
            .filter(|o| o["apiVersion"] == group_version)
            .map(|o| {
                let kind = o["kind"].as_str().unwrap();
                json!({"name": plural(kind), "singularName": kind.to_lowercase(), "kind": kind,
                    "namespaced": !CLUSTER_SCOPED.contains(&kind),
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        resources.dedup();
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources})
    }

    fn replicas(deployment: &Value) -> i64 {
        deployment["spec"]["replicas"].as_i64().unwrap_or(1)
    }

    #[tokio::test]
    async fn each_object_is_server_side_applied_as_weft_in_order_then_its_deployments_waited_for() {
        let objects = crate::manifest::generate(&Default::default());
        let (client, mut mock) = mock::client();
        let installing = {
            let objects = objects.clone();
            tokio::spawn(async move {
                let mut progress = Vec::new();
                install(&client, &objects, Duration::from_secs(10), |p| {
                    progress.push(p)
                })
                .await
                .map(|()| progress)
            })
        };
        let mut patched = Vec::new();
        let mut polled = Vec::new();
        // Until the client is gone with the install.
        while let Some(sent) = try_next(&mut mock).await {
            match (&sent.method, sent.path.split('/').count()) {
                // `/api/v1`, `/apis/GROUP/VERSION`: discovery, for the resource's name.
                (&Method::GET, 3 | 4) => {
                    let body = discovery(&objects, &sent.path);
                    sent.ok(body);
                }
                (&Method::PATCH, _) => {
                    let body = sent.body.clone();
                    patched.push((
                        sent.path.clone(),
                        sent.query.clone(),
                        sent.content_type.clone(),
                        body.clone(),
                    ));
                    sent.ok(body);
                }
                (&Method::GET, _) => {
                    // The Deployment controller has made istiod available on the second look.
                    let mut deployment = objects
                        .iter()
                        .find(|o| path_of(o) == sent.path)
                        .unwrap_or_else(|| panic!("an unexpected request: {}", sent.line()))
                        .clone();
                    let looked = polled.contains(&sent.path);
                    let available = match looked || deployment["metadata"]["name"] != "istiod" {
                        true => replicas(&deployment),
                        false => 0,
                    };
                    deployment["status"] = json!({"availableReplicas": available});
                    polled.push(sent.path.clone());
                    sent.ok(deployment);
                }
                _ => panic!("an unexpected request: {}", sent.line()),
            }
        }
        let progress = installing.await.unwrap().unwrap();
        assert_eq!(patched.len(), objects.len(), "one apply per object");
        for ((path, query_sent, content_type, body), object) in patched.iter().zip(&objects) {
            assert_eq!(path, &path_of(object));
            assert_eq!(
                query_sent,
                &query(&[("fieldManager", "weft"), ("force", "true")]),
                "{path}"
            );
            assert_eq!(
                content_type.as_deref(),
                Some("application/apply-patch+yaml"),
                "{path}"
            );
            // The patch is the manifest's object itself.
            assert_eq!(body, object, "{path}");
        }
        // Then each Deployment waited for in turn, istiod's seen unavailable first.
        let mut expected: Vec<Progress> = objects
            .iter()
            .map(|o| Progress::Applied(display(o)))
            .collect();
        for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
            let what = display(deployment);
            if what == "deployment/istiod" {
                expected.push(Progress::Waiting {
                    what: what.clone(),
                    ready: 0,
                    wanted: replicas(deployment),
                });
            }
            expected.push(Progress::Ready(what));
        }
        assert!(expected.contains(&Progress::Ready("deployment/istiod".into())));
        assert_eq!(progress, expected);
    }
}

//! The watches (Namespaces, Services, EndpointSlices, Pods, the root namespace's
//! ConfigMaps, Secrets, CRDs, then Istio's kinds): one kube-rs watcher per kind, each resuming from its resourceVersion and
//! listing again after a 410 Gone, with backoff while the API server is away (the index
//! keeps the last state meanwhile). Istio's kinds are watched once their CRDs exist, at
//! the version the CRD serves. [`KubeSource`] is ready once every first list is in.

use super::index::{self, Index, IstioKind, ISTIO_KINDS};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use weft_api::Resource;
use weft_control::store::{ConfigSource, StoreError};
use weft_discovery::wire::Key;

type Changed = BTreeSet<PathBuf>;

/// The cluster's config, as the control plane reads it.
pub struct KubeSource {
    shared: Arc<Shared>,
    /// Changes from the watches, until the control plane's watch takes them.
    changes: Mutex<Option<mpsc::UnboundedReceiver<Changed>>>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    index: Mutex<Index>,
    client: Client,
    changed: mpsc::UnboundedSender<Changed>,
    /// Whether the CRDs' first list is in (then the Istio kinds to wait for are known).
    crds_listed: Mutex<bool>,
    synced: watch::Sender<bool>,
    started: Mutex<BTreeSet<IstioKind>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration: {0} (in a pod, the service account's; else $KUBECONFIG or ~/.kube/config; or --kubeconfig)")]
    Config(String),
    #[error("cannot make a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from a kubeconfig file, or the pod's service account, else `$KUBECONFIG`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?,
    };
    Ok(Client::try_from(config)?)
}

impl KubeSource {
    /// Starts the watches and returns once each kind's first list is in: until then the
    /// registry would be partial, so discovery waits (istiod's readiness holds as well).
    pub async fn start(client: Client) -> KubeSource {
        let (changed, changes) = mpsc::unbounded_channel();
        let (synced, mut ready) = watch::channel(false);
        let shared = Arc::new(Shared {
            index: Mutex::new(Index::default()),
            client: client.clone(),
            changed,
            crds_listed: Mutex::new(false),
            synced,
            started: Mutex::new(BTreeSet::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            spawn(
                shared.clone(),
                Api::<Namespace>::all(client.clone()),
                "Namespaces",
                Index::namespaces,
            ),
            spawn(
                shared.clone(),
                Api::<Service>::all(client.clone()),
                "Services",
                Index::services,
            ),
            spawn(
                shared.clone(),
                Api::<EndpointSlice>::all(client.clone()),
                "EndpointSlices",
                Index::endpoint_slices,
            ),
            spawn(
                shared.clone(),
                Api::<Pod>::all(client.clone()),
                "Pods",
                Index::pods,
            ),
            spawn(
                shared.clone(),
                Api::<ConfigMap>::namespaced(client.clone(), weft_api::scope::ROOT_NAMESPACE),
                "ConfigMaps",
                Index::config_maps,
            ),
            spawn(
                shared.clone(),
                Api::<Secret>::all(client.clone()),
                "Secrets",
                Index::secrets,
            ),
            tokio::spawn(watch_crds(shared.clone())),
        ];
        let waiting = tokio::time::Instant::now();
        while !*ready.borrow_and_update() {
            tokio::select! {
                _ = ready.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                    tracing::warn!(after = ?waiting.elapsed(), "still waiting for the first list of every watched kind from the API server");
                }
            }
        }
        tracing::info!(after = ?waiting.elapsed(), "Kubernetes watches synced");
        KubeSource {
            shared,
            changes: Mutex::new(Some(changes)),
            tasks,
        }
    }

    /// The namespaces the cluster has, but those being deleted: where the mesh root goes.
    pub fn namespaces(&self) -> impl Fn() -> Vec<String> + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.index.lock().namespace_names()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in self.tasks.iter().chain(self.shared.tasks.lock().iter()) {
            t.abort();
        }
    }
}

impl Shared {
    fn publish(&self, changed: Changed) {
        if !changed.is_empty() {
            let _ = self.changed.send(changed);
        }
        let synced = *self.crds_listed.lock() && self.index.lock().synced();
        self.synced.send_if_modified(|s| {
            let was = *s;
            *s = synced || was;
            !was && *s
        });
    }
}

/// One kind's watch, folding every event into the index.
fn spawn<K>(
    shared: Arc<Shared>,
    api: Api<K>,
    what: &'static str,
    apply: fn(&mut Index, Event<K>) -> Changed,
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, what));
        while let Some(event) = events.next().await {
            let changed = apply(&mut shared.index.lock(), event);
            shared.publish(changed);
        }
    })
}

/// The watcher's events, its errors logged and retried with backoff.
fn watcher<K>(api: Api<K>, what: &'static str) -> impl futures_util::Stream<Item = Event<K>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| async move {
            match event {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!("watch of {what}: {e}; the last state keeps serving");
                    None
                }
            }
        })
}

/// Watches Istio's CRDs and starts each kind's watch once its CRD is there.
async fn watch_crds(shared: Arc<Shared>) {
    let api = Api::<CustomResourceDefinition>::all(shared.client.clone());
    let mut events = std::pin::pin!(watcher(api, "CustomResourceDefinitions"));
    while let Some(event) = events.next().await {
        match event {
            Event::Apply(crd) | Event::InitApply(crd) => start_kind(&shared, &crd),
            Event::InitDone => {
                *shared.crds_listed.lock() = true;
                shared.publish(Changed::new());
            }
            // A CRD deleted takes its objects with it; the kind's watch then lists none.
            Event::Delete(_) | Event::Init => {}
        }
    }
}

fn start_kind(shared: &Arc<Shared>, crd: &CustomResourceDefinition) {
    let name = crd.metadata.name.as_deref().unwrap_or_default();
    let Some(kind) = ISTIO_KINDS.iter().find(|k| k.crd_name() == name).copied() else {
        return;
    };
    // The version the CRD serves: v1 where it can, else its stored one (older Istio).
    let versions = &crd.spec.versions;
    let version = versions
        .iter()
        .find(|v| v.served && v.name == kind.version)
        .or_else(|| versions.iter().find(|v| v.served && v.storage))
        .map(|v| v.name.clone());
    let Some(version) = version else {
        return;
    };
    if !shared.started.lock().insert(kind) {
        return;
    }
    shared.index.lock().watching(kind);
    let resource = ApiResource {
        group: kind.group.into(),
        version: version.clone(),
        api_version: format!("{}/{version}", kind.group),
        kind: kind.kind.into(),
        plural: kind.plural.into(),
    };
    tracing::info!(crd = name, %version, "watching {}", kind.kind);
    let api = Api::<DynamicObject>::all_with(shared.client.clone(), &resource);
    let watching = shared.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, kind.kind));
        while let Some(mut event) = events.next().await {
            // The list's items carry no kind of their own.
            set_types(&mut event, &resource);
            let changed = watching.index.lock().istio(kind, event);
            watching.publish(changed);
        }
    });
    shared.tasks.lock().push(task);
}

fn set_types(event: &mut Event<DynamicObject>, resource: &ApiResource) {
    if let Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) = event {
        if o.types.is_none() {
            o.types = Some(kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
        }
    }
}

const READ_ONLY: &str =
    "the control plane reads its config from the Kubernetes cluster: kubectl apply it there";

impl ConfigSource for KubeSource {
    fn partitions(&self) -> Result<Vec<PathBuf>, StoreError> {
        Ok(self.shared.index.lock().partitions())
    }

    fn owns(&self, partition: &Path) -> bool {
        index::owns(partition)
    }

    fn content(&self, partition: &Path) -> Result<Option<String>, StoreError> {
        Ok(self
            .shared
            .index
            .lock()
            .read(partition)
            .map(|doc| doc.to_string()))
    }

    fn parse(&self, partition: &Path, content: &str) -> Result<Vec<Resource>, StoreError> {
        weft_control::store::checked(weft_api::load_str(content, partition), partition)
    }

    fn partition_for(&self, _key: &Key) -> PathBuf {
        PathBuf::from("kubernetes")
    }

    fn put(&self, key: &Key, _: &Resource, _: Option<&Resource>) -> Result<(), StoreError> {
        Err(StoreError::ReadOnly {
            key: key.clone(),
            hint: READ_ONLY,
        })
    }

    fn delete(&self, key: &Key, _: &Resource) -> Result<(), StoreError> {
        Err(StoreError::ReadOnly {
            key: key.clone(),
            hint: READ_ONLY,
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn missing_blocks_readiness(&self) -> bool {
        false
    }

    fn watch(&self, changed: mpsc::UnboundedSender<Option<Changed>>) -> JoinHandle<()> {
        let taken = self.changes.lock().take();
        tokio::spawn(async move {
            let Some(mut changes) = taken else {
                return;
            };
            while let Some(mut batch) = changes.recv().await {
                // Whatever else is queued goes in the same read.
                while let Ok(more) = changes.try_recv() {
                    batch.extend(more);
                }
                if changed.send(Some(batch)).is_err() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{self, next, query};
    use http::Method;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// Each watched kind's collection, as the watches ask for it: cluster-wide but the
    /// root namespace's ConfigMaps, and an Istio kind once its CRD is listed.
    const WATCHED: [&str; 8] = [
        "/api/v1/namespaces",
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/pods",
        "/api/v1/namespaces/istio-system/configmaps",
        "/api/v1/secrets",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "/apis/networking.istio.io/v1/virtualservices",
    ];

    fn virtual_service_crd() -> serde_json::Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "virtualservices.networking.istio.io", "resourceVersion": "7"},
            "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                "names": {"kind": "VirtualService", "plural": "virtualservices"},
                "versions": [
                    {"name": "v1alpha3", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true}]}})
    }

    #[tokio::test]
    async fn each_kind_is_listed_whole_then_watched_from_its_lists_version_with_bookmarks() {
        let (client, mut mock) = mock::client();
        let starting = tokio::spawn(KubeSource::start(client));
        let (mut lists, mut watches) = (BTreeMap::new(), BTreeMap::new());
        // Watches stay open, unanswered, as a quiet API server keeps them.
        let mut open = Vec::new();
        while watches.len() < WATCHED.len() {
            let sent = tokio::time::timeout(Duration::from_secs(10), next(&mut mock))
                .await
                .unwrap_or_else(|_| {
                    panic!("no more requests: lists {lists:?}, watches {watches:?}")
                });
            assert_eq!(sent.method, Method::GET, "{}", sent.line());
            let at = WATCHED
                .iter()
                .position(|p| *p == sent.path)
                .unwrap_or_else(|| panic!("an unexpected request: {}", sent.line()));
            if sent.query.contains_key("watch") {
                assert!(
                    watches.insert(at, sent.query.clone()).is_none(),
                    "watched twice: {}",
                    sent.line()
                );
                open.push(sent);
                continue;
            }
            assert!(
                lists.insert(at, sent.query.clone()).is_none(),
                "listed twice: {}",
                sent.line()
            );
            let items = match sent.path.ends_with("/customresourcedefinitions") {
                true => vec![virtual_service_crd()],
                false => Vec::new(),
            };
            sent.ok(json!({"apiVersion": "v1", "kind": "List",
                "metadata": {"resourceVersion": (100 + at).to_string()}, "items": items}));
        }
        // Ready once every first list is in, the VirtualServices' too.
        let source = tokio::time::timeout(Duration::from_secs(10), starting)
            .await
            .expect("synced once every kind was listed")
            .unwrap();
        for (at, path) in WATCHED.iter().enumerate() {
            // No label or field selector: failed pods are dropped by the index, as
            // istiod's informers drop them.
            assert_eq!(lists[&at], query(&[("limit", "500")]), "{path}'s list");
            let version = (100 + at).to_string();
            assert_eq!(
                watches[&at],
                query(&[
                    ("watch", "true"),
                    ("timeoutSeconds", "290"),
                    ("allowWatchBookmarks", "true"),
                    ("resourceVersion", &version),
                ]),
                "{path}'s watch"
            );
        }
        drop((source, open));
    }
}

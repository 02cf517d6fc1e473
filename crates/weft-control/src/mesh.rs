//! The control plane's state behind one lock: the objects, the views and the connected
//! proxies. Every change goes through [`Mesh::apply`], which works out which views it
//! touches and broadcasts only their differences.

use crate::encoded::Encoded;
use crate::metrics::Metrics;
use crate::objects::{Object, Objects, Source};
use crate::views::{View, ViewKey};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use weft_api::Kind;
use weft_discovery::admin::ProxyStatus;
use weft_discovery::discovery::Hello;
use weft_discovery::wire::Key;

/// A proxy is known by namespace and name, as a pod is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyId {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ProxyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

pub struct ProxyRecord {
    /// Without its join token.
    pub hello: Hello,
    /// Whether it presented the join token, so its workload is an endpoint.
    pub registered: bool,
    pub view: ViewKey,
    /// Which stream is current: a reconnect supersedes a stream that has not noticed yet.
    pub stream: u64,
    pub connected_at: Instant,
    pub sent: String,
    pub sent_at: Option<Instant>,
    pub acked: String,
    pub nacked: String,
    pub nack_reason: String,
    /// The certificate chain it said it holds (PEM), on the TLS port.
    pub certificate_chain: String,
    /// Tells the stream its view changed (its Sidecar did).
    moved: watch::Sender<()>,
}

/// Where a stream's updates after its first come from.
pub struct Subscription {
    pub stream: u64,
    pub updates: broadcast::Receiver<Arc<Encoded>>,
    pub moved: watch::Receiver<()>,
}

pub struct Change {
    pub upserts: Vec<(Key, Object)>,
    pub removals: Vec<Key>,
}

pub struct Mesh {
    objects: Objects,
    views: HashMap<ViewKey, View>,
    proxies: BTreeMap<ProxyId, ProxyRecord>,
    next_stream: u64,
    /// Bumped on every acknowledgement, rejection, connection and disconnection.
    events: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
}

impl Mesh {
    pub fn new(metrics: Arc<Metrics>) -> Mesh {
        Mesh {
            objects: Objects::default(),
            views: HashMap::new(),
            proxies: BTreeMap::new(),
            next_stream: 0,
            events: watch::channel(0).0,
            metrics,
        }
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    pub fn proxies(&self) -> impl Iterator<Item = (&ProxyId, &ProxyRecord)> {
        self.proxies.iter()
    }

    pub fn events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// Applies a change and pushes it to the views it affects. Returns how many views
    /// changed.
    pub fn apply(&mut self, change: Change) -> usize {
        let mut changed = BTreeSet::new();
        let mut sidecars_changed = BTreeSet::new();
        for (key, object) in change.upserts {
            let same = self
                .objects
                .get(&key)
                .is_some_and(|o| o.digest == object.digest && o.source == object.source);
            if !same {
                self.objects.insert(key.clone(), object);
                changed.insert(key);
            }
        }
        for key in change.removals {
            if self.objects.remove(&key).is_some() {
                changed.insert(key);
            }
        }
        self.objects.settle();
        // A Service or ServiceEntry decides which WorkloadEntries of its namespace are seen.
        let namespaces: BTreeSet<String> = changed
            .iter()
            .filter(|k| matches!(k.kind, Kind::Service | Kind::ServiceEntry))
            .map(|k| k.namespace.clone())
            .collect();
        for ns in namespaces {
            changed.extend(self.objects.workload_entries_in(&ns).cloned());
        }
        for key in changed.iter().filter(|k| k.kind == Kind::Sidecar) {
            sidecars_changed.insert(key.clone());
        }
        if changed.is_empty() {
            return 0;
        }
        let started = Instant::now();
        // Sidecars decide a view's scope; Gateways and DestinationRules the Secrets it holds.
        let credentials_changed = changed
            .iter()
            .any(|k| matches!(k.kind, Kind::Gateway | Kind::DestinationRule));
        if !sidecars_changed.is_empty() || credentials_changed {
            self.reassign_views();
        }
        let changed: Vec<Key> = changed.into_iter().collect();
        let mut touched = 0;
        for view in self.views.values_mut() {
            // A view built on a changed Sidecar re-decides everything.
            let keys = match &view.key.sidecar {
                Some(s) if sidecars_changed.contains(s) => {
                    let mut all: BTreeSet<Key> = self.objects.keys().cloned().collect();
                    all.extend(view.keys().cloned());
                    all.into_iter().collect()
                }
                _ => changed.clone(),
            };
            if view.publish(&self.objects, keys) {
                touched += 1;
            }
        }
        self.metrics
            .pushed(&xds_types(&changed), touched, started.elapsed());
        self.metrics.objects(self.objects.len());
        touched
    }

    /// After Sidecars, Gateways or DestinationRules change, moves each proxy whose view key changed to its new
    /// view; its stream resubscribes.
    fn reassign_views(&mut self) {
        let ids: Vec<ProxyId> = self.proxies.keys().cloned().collect();
        for id in ids {
            let record = &self.proxies[&id];
            let key = self.view_key(&record.hello);
            if key != record.view {
                let old = record.view.clone();
                self.leave(&old);
                self.join(key.clone());
                let record = self.proxies.get_mut(&id).expect("listed above");
                record.view = key;
                let _ = record.moved.send(());
            }
        }
    }

    fn view_key(&self, hello: &Hello) -> ViewKey {
        let labels: BTreeMap<String, String> = hello
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ViewKey {
            namespace: hello.namespace.clone(),
            sidecar: self.objects.sidecar_for(&hello.namespace, &labels),
            credentials: self.objects.credentials_for(&hello.namespace, &labels),
        }
    }

    fn join(&mut self, key: ViewKey) -> &mut View {
        let objects = &self.objects;
        let view = self
            .views
            .entry(key.clone())
            .or_insert_with(|| View::build(key, objects));
        view.members += 1;
        view
    }

    fn leave(&mut self, key: &ViewKey) {
        if let Some(view) = self.views.get_mut(key) {
            view.members -= 1;
            if view.members == 0 {
                self.views.remove(key);
            }
        }
        self.metrics.views(self.views.len());
    }

    /// Registers a proxy's stream (superseding an older one of the same proxy) and returns
    /// its first update.
    pub fn connect(&mut self, hello: Hello, registered: bool) -> (Arc<Encoded>, Subscription) {
        let id = ProxyId {
            namespace: hello.namespace.clone(),
            name: hello.name.clone(),
        };
        if let Some(old) = self.proxies.remove(&id) {
            self.leave(&old.view);
        }
        self.next_stream += 1;
        let stream = self.next_stream;
        let key = self.view_key(&hello);
        let held = hello.held_version.clone();
        self.join(key.clone());
        let view = self.views.get_mut(&key).expect("joined above");
        let first = view.full(&self.objects, &held);
        let updates = view.subscribe();
        self.metrics.views(self.views.len());
        let (moved, moved_rx) = watch::channel(());
        self.proxies.insert(
            id,
            ProxyRecord {
                hello,
                registered,
                view: key,
                stream,
                connected_at: Instant::now(),
                sent: first.version.clone(),
                sent_at: Some(Instant::now()),
                acked: String::new(),
                nacked: String::new(),
                nack_reason: String::new(),
                certificate_chain: String::new(),
                moved,
            },
        );
        self.connections_changed();
        let sub = Subscription {
            stream,
            updates,
            moved: moved_rx,
        };
        (first, sub)
    }

    /// A fresh start on the proxy's current view, after falling behind or moving.
    pub fn resubscribe(
        &mut self,
        id: &ProxyId,
        stream: u64,
        held: &str,
    ) -> Option<(Arc<Encoded>, Subscription)> {
        let record = self.proxies.get(id).filter(|r| r.stream == stream)?;
        let view = self.views.get_mut(&record.view)?;
        let first = view.full(&self.objects, held);
        let updates = view.subscribe();
        let moved = record.moved.subscribe();
        self.sent(id, stream, &first.version);
        let sub = Subscription {
            stream,
            updates,
            moved,
        };
        Some((first, sub))
    }

    pub fn sent(&mut self, id: &ProxyId, stream: u64, version: &str) {
        if let Some(r) = self.current(id, stream) {
            r.sent = version.to_string();
            r.sent_at = Some(Instant::now());
        }
    }

    pub fn acked(&mut self, id: &ProxyId, stream: u64, version: &str) {
        let metrics = self.metrics.clone();
        let Some(r) = self.current(id, stream) else {
            return;
        };
        if r.sent == version {
            if let Some(at) = r.sent_at.take() {
                metrics.converged(at.elapsed());
            }
        }
        r.acked = version.to_string();
        self.events.send_modify(|n| *n += 1);
    }

    pub fn nacked(&mut self, id: &ProxyId, stream: u64, version: &str, reason: &str) {
        let Some(r) = self.current(id, stream) else {
            return;
        };
        tracing::warn!(proxy = %id, version, "proxy rejected config: {reason}");
        r.nacked = version.to_string();
        r.nack_reason = reason.to_string();
        r.sent_at = None;
        self.metrics.rejected();
        self.events.send_modify(|n| *n += 1);
    }

    /// Called only for streams on 15012, whose discovery checked the proxy's certificate.
    pub fn certificate_held(&mut self, id: &ProxyId, stream: u64, chain_pem: String) {
        if let Some(r) = self.current(id, stream) {
            r.certificate_chain = chain_pem;
        }
    }

    pub fn disconnect(&mut self, id: &ProxyId, stream: u64) {
        if self.current(id, stream).is_none() {
            return;
        }
        let record = self.proxies.remove(id).expect("checked above");
        self.leave(&record.view);
        self.connections_changed();
    }

    fn current(&mut self, id: &ProxyId, stream: u64) -> Option<&mut ProxyRecord> {
        self.proxies.get_mut(id).filter(|r| r.stream == stream)
    }

    fn connections_changed(&mut self) {
        self.metrics.connected(self.proxies.len());
        self.events.send_modify(|n| *n += 1);
    }

    /// The proxy named `name` or `name.namespace`.
    pub fn find_proxy(&self, name: &str) -> Option<(&ProxyId, &ProxyRecord)> {
        self.proxies
            .iter()
            .find(|(id, _)| id.to_string() == name)
            .or_else(|| self.proxies.iter().find(|(id, _)| id.name == name))
    }

    /// Every connected proxy's sync state, for `weft proxy-status` and the dashboard.
    pub fn proxy_statuses(&self) -> Vec<ProxyStatus> {
        self.proxies
            .values()
            .map(|p| ProxyStatus {
                identity: Some(p.hello.clone()),
                sent_version: p.sent.clone(),
                acked_version: p.acked.clone(),
                nacked_version: p.nacked.clone(),
                nack_reason: p.nack_reason.clone(),
                connected_seconds: p.connected_at.elapsed().as_secs(),
                resources: self.view_objects(&p.view).len() as u32,
                registered: p.registered,
            })
            .collect()
    }

    /// The objects a proxy's view holds, for `weft proxy-config`.
    pub fn view_objects(&self, view: &ViewKey) -> Vec<&Object> {
        self.views
            .get(view)
            .into_iter()
            .flat_map(|v| v.keys())
            .filter_map(|k| self.objects.get(k))
            .collect()
    }

    /// Config objects (not announced workloads) as they are stored.
    pub fn config_objects(&self) -> impl Iterator<Item = (&Key, &Object)> {
        self.objects
            .iter()
            .filter(|(_, o)| o.source == Source::Config)
    }
}

/// The xDS types istiod would push for changes to these kinds, for `pilot_xds_pushes`.
fn xds_types(changed: &[Key]) -> Vec<&'static str> {
    let mut types = BTreeSet::new();
    for key in changed {
        types.extend(match key.kind {
            Kind::Service | Kind::ServiceEntry => &["cds", "eds"][..],
            Kind::DestinationRule => &["cds"][..],
            Kind::WorkloadEntry => &["eds"][..],
            Kind::VirtualService => &["rds"][..],
            Kind::Gateway => &["lds", "rds"][..],
            Kind::Sidecar | Kind::ConfigMap => &["cds", "eds", "lds", "rds"][..],
            // Telemetry configures the listeners' filters.
            Kind::Telemetry => &["lds"][..],
            // Inbound listeners and, for callers, the clusters' TLS.
            Kind::PeerAuthentication => &["cds", "lds"][..],
            // The RBAC filters of the inbound listeners.
            Kind::AuthorizationPolicy | Kind::RequestAuthentication => &["lds"][..],
            // Gateways' certificates go by SDS.
            Kind::Secret => &["sds"][..],
        });
    }
    types.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn change(yaml: &str) -> Change {
        let loaded = weft_api::load::load_str(yaml, Path::new("test.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        Change {
            upserts: loaded
                .resources
                .into_iter()
                .map(|r| (Key::of(&r), Object::new(r, Source::Config)))
                .collect(),
            removals: vec![],
        }
    }

    fn hello(namespace: &str, name: &str) -> Hello {
        Hello {
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    const SERVICE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: default}\nspec: {hosts: [db.example.com], ports: [{number: 5432, name: tcp, protocol: TCP}], resolution: DNS}\n";

    #[test]
    fn members_of_a_view_share_one_encoded_snapshot_until_it_changes() {
        let mut mesh = Mesh::new(Arc::new(Metrics::default()));
        mesh.apply(change(SERVICE));
        let (a, _a) = mesh.connect(hello("default", "a"), false);
        let (b, _b) = mesh.connect(hello("default", "b"), false);
        assert!(
            Arc::ptr_eq(&a, &b),
            "one encoding for the view, not one per proxy"
        );
        let (other, _other) = mesh.connect(hello("other", "c"), false);
        assert!(
            !Arc::ptr_eq(&a, &other),
            "another namespace is another view"
        );

        mesh.apply(change(&SERVICE.replace("5432", "5433")));
        let (c, _c) = mesh.connect(hello("default", "c2"), false);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_ne!(a.version, c.version);
    }
}

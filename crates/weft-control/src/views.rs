//! Per-proxy views. What a proxy may see depends only on its namespace and on the Sidecar
//! that applies to it, so proxies that share both share one [`View`]: its resource set is
//! computed once, and its full snapshot and updates are encoded once and shared by every
//! member's stream.

use crate::encoded::Encoded;
use crate::objects::{Object, Objects};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::broadcast;
use weft_api::{scope, Kind, Spec};
use weft_discovery::discovery::Update;
use weft_discovery::wire::{self, Key, VersionSum};

/// Updates a slow stream may fall behind by before it is sent a full snapshot instead.
const BACKLOG: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewKey {
    pub namespace: String,
    pub sidecar: Option<Key>,
    /// The Secrets of `namespace` its members read (`Objects::credentials_for`).
    pub credentials: BTreeSet<String>,
}

pub struct View {
    pub key: ViewKey,
    /// What the members hold: key → digest.
    entries: HashMap<Key, u64>,
    /// The Services and ServiceEntries among `entries`: their endpoints are visible too.
    services: HashSet<Key>,
    sum: VersionSum,
    /// The full snapshot at the current version, once a member has asked for it.
    full: Option<Arc<Encoded>>,
    updates: broadcast::Sender<Arc<Encoded>>,
    pub members: usize,
}

impl View {
    pub fn build(key: ViewKey, objects: &Objects) -> View {
        let mut view = View {
            key,
            entries: HashMap::new(),
            services: HashSet::new(),
            sum: VersionSum::default(),
            full: None,
            updates: broadcast::channel(BACKLOG).0,
            members: 0,
        };
        let all: Vec<Key> = objects.keys().cloned().collect();
        view.refresh(objects, all);
        view
    }

    pub fn version(&self) -> String {
        self.sum.version()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Encoded>> {
        self.updates.subscribe()
    }

    /// Everything the view holds, or `unchanged` if the proxy already holds this version.
    pub fn full(&mut self, objects: &Objects, held_version: &str) -> Arc<Encoded> {
        let version = self.version();
        if held_version == version {
            return Arc::new(Encoded::new(Update {
                version,
                full: true,
                unchanged: true,
                ..Default::default()
            }));
        }
        let entries = &self.entries;
        self.full
            .get_or_insert_with(|| {
                Arc::new(Encoded::new(Update {
                    version,
                    full: true,
                    resources: entries
                        .keys()
                        .filter_map(|k| objects.get(k).map(|o| wire::encode(k, o.json.clone())))
                        .collect(),
                    ..Default::default()
                }))
            })
            .clone()
    }

    /// The keys of the view's resources, for `weft proxy-config`.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.keys()
    }

    /// Re-decides the `changed` keys and broadcasts the difference, if there is one.
    /// Returns whether anything changed.
    pub fn publish(&mut self, objects: &Objects, changed: Vec<Key>) -> bool {
        match self.refresh(objects, changed) {
            Some(update) => {
                // No receiver is fine: a proxy that connects later gets a full snapshot.
                let _ = self.updates.send(Arc::new(Encoded::new(update)));
                true
            }
            None => false,
        }
    }

    /// Re-decides whether each of `changed` belongs in the view, Services and ServiceEntries
    /// first because they decide which WorkloadEntries do.
    fn refresh(&mut self, objects: &Objects, mut changed: Vec<Key>) -> Option<Update> {
        changed.sort_by_key(|k| match k.kind {
            Kind::Service | Kind::ServiceEntry | Kind::Sidecar => 0,
            Kind::WorkloadEntry => 2,
            _ => 1,
        });
        let base_version = self.version();
        let mut update = Update::default();
        for key in changed {
            let wanted = objects.get(&key).filter(|o| self.admits(objects, &key, o));
            match (wanted, self.entries.get(&key).copied()) {
                (Some(o), held) if held != Some(o.digest) => {
                    if let Some(old) = held {
                        self.sum.remove(old);
                    }
                    self.sum.add(o.digest);
                    self.entries.insert(key.clone(), o.digest);
                    if matches!(key.kind, Kind::Service | Kind::ServiceEntry) {
                        self.services.insert(key.clone());
                    }
                    update.resources.push(wire::encode(&key, o.json.clone()));
                }
                (None, Some(old)) => {
                    self.sum.remove(old);
                    self.entries.remove(&key);
                    self.services.remove(&key);
                    update.removed.push(key.to_wire());
                }
                _ => {}
            }
        }
        if update.resources.is_empty() && update.removed.is_empty() {
            return None;
        }
        self.full = None;
        update.version = self.version();
        update.base_version = base_version;
        Some(update)
    }

    /// Whether a proxy of this view needs `object`: Istio's `exportTo`, the Sidecar's egress
    /// hosts, endpoints of visible services and workloads of none, the Sidecars that may apply to it, Gateways.
    fn admits(&self, objects: &Objects, key: &Key, object: &Object) -> bool {
        let r = &object.resource;
        match &r.spec {
            Spec::Service(_)
            | Spec::ServiceEntry(_)
            | Spec::VirtualService(_)
            | Spec::DestinationRule(_) => {
                scope::exported_to(r, &self.key.namespace) && self.egress_admits(objects, object)
            }
            // One no service selects goes to every view: a destination names such a caller
            // by its address, as TCP carries no peer metadata.
            Spec::WorkloadEntry(_) => {
                let selecting = objects.selecting(key);
                selecting.is_empty() || selecting.iter().any(|s| self.services.contains(s))
            }
            // Policies apply to workloads of their own namespace, or mesh-wide from the root.
            Spec::Sidecar(_)
            | Spec::Telemetry(_)
            | Spec::AuthorizationPolicy(_)
            | Spec::RequestAuthentication(_) => {
                r.namespace() == self.key.namespace || r.namespace() == scope::ROOT_NAMESPACE
            }
            // Every namespace's: a client reads the destination's to know whether it takes
            // mTLS (a DISABLE policy there means plaintext).
            Spec::Gateway(_) | Spec::MeshConfig(_) | Spec::PeerAuthentication(_) => true,
            // Istio's SDS gives a gateway the secrets of its own namespace only; here only
            // those its Gateways name, and the discovery stream sends them only to a proxy
            // whose certificate proves that namespace.
            Spec::Secret(_) => {
                r.namespace() == self.key.namespace && self.key.credentials.contains(r.name())
            }
        }
    }

    fn egress_admits(&self, objects: &Objects, object: &Object) -> bool {
        let sidecar = self.key.sidecar.as_ref().and_then(|k| objects.get(k));
        match sidecar.map(|o| &o.resource.spec) {
            Some(Spec::Sidecar(sc)) => scope::egress_admits(
                sc,
                &self.key.namespace,
                object.resource.namespace(),
                &object.hosts,
            ),
            _ => true,
        }
    }
}

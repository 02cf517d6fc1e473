//! Per-proxy views. What a proxy may see depends only on its namespace and on the Sidecar
//! that applies to it, so proxies that share both share one [`View`]: its resource set is
//! computed once, and its full snapshot and updates are encoded once and shared by every
//! member's stream.

use crate::encoded::Encoded;
use crate::objects::{Object, Objects};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::broadcast;
use weft_api::types::Sidecar;
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
        // Only what the keys say the view may hold is read, and WorkloadEntries only of
        // namespaces whose services it sees: a view of a large mesh holds a small part of
        // it, a thousand proxies connecting at once build every view, and reading every
        // object for each was memory-bound (a cache miss per object).
        let sidecar = view.sidecar(objects);
        for rank in 0..=1 {
            let keys: Vec<&Key> = objects
                .keys()
                .filter(|k| self::rank(k.kind) == rank && view.may_admit(sidecar, k))
                .collect();
            view.decide(objects, keys.into_iter(), None);
        }
        let namespaces: BTreeSet<String> =
            view.services.iter().map(|k| k.namespace.clone()).collect();
        let entries = namespaces
            .iter()
            .flat_map(|ns| objects.workload_entries_in(ns))
            .chain(objects.unselected());
        view.decide(objects, entries, None);
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

    /// Re-decides whether each of `changed` belongs in the view, in `rank` order, and
    /// returns the difference as an update on top of the version before.
    fn refresh(&mut self, objects: &Objects, mut changed: Vec<Key>) -> Option<Update> {
        changed.sort_by_key(|k| rank(k.kind));
        let base_version = self.version();
        let mut update = Update::default();
        self.decide(objects, changed.iter(), Some(&mut update));
        if update.resources.is_empty() && update.removed.is_empty() {
            return None;
        }
        self.full = None;
        update.version = self.version();
        update.base_version = base_version;
        Some(update)
    }

    /// Admits or drops each of `keys`, recording the upserts and removals in `update`.
    fn decide<'k>(
        &mut self,
        objects: &Objects,
        keys: impl Iterator<Item = &'k Key>,
        mut update: Option<&mut Update>,
    ) {
        let sidecar = self.sidecar(objects);
        for key in keys {
            let wanted = objects
                .get(key)
                .filter(|o| self.admits(objects, sidecar, key, o));
            match (wanted, self.entries.get(key).copied()) {
                (Some(o), held) if held != Some(o.digest) => {
                    if let Some(old) = held {
                        self.sum.remove(old);
                    }
                    self.sum.add(o.digest);
                    self.entries.insert(key.clone(), o.digest);
                    if matches!(key.kind, Kind::Service | Kind::ServiceEntry) {
                        self.services.insert(key.clone());
                    }
                    if let Some(update) = update.as_deref_mut() {
                        update.resources.push(wire::encode(key, o.json.clone()));
                    }
                }
                (None, Some(old)) => {
                    self.sum.remove(old);
                    self.entries.remove(key);
                    self.services.remove(key);
                    if let Some(update) = update.as_deref_mut() {
                        update.removed.push(key.to_wire());
                    }
                }
                _ => {}
            }
        }
    }

    /// The Sidecar the view is built on.
    fn sidecar<'o>(&self, objects: &'o Objects) -> Option<&'o Sidecar> {
        let object = self.key.sidecar.as_ref().and_then(|k| objects.get(k))?;
        match &object.resource.spec {
            Spec::Sidecar(sc) => Some(sc),
            _ => None,
        }
    }

    /// What the key alone decides of [`View::admits`]: whether the view may hold an object
    /// of that kind and namespace.
    fn may_admit(&self, sidecar: Option<&Sidecar>, key: &Key) -> bool {
        let (namespace, own) = (key.namespace.as_str(), self.key.namespace.as_str());
        match key.kind {
            Kind::Service | Kind::ServiceEntry | Kind::VirtualService | Kind::DestinationRule => {
                sidecar.is_none_or(|sc| scope::egress_namespace_admits(sc, own, namespace))
            }
            // Policies apply to workloads of their own namespace, or mesh-wide from the root.
            Kind::Sidecar
            | Kind::Telemetry
            | Kind::AuthorizationPolicy
            | Kind::RequestAuthentication => namespace == own || namespace == scope::ROOT_NAMESPACE,
            // Istio's SDS gives a gateway the secrets of its own namespace only.
            Kind::Secret => namespace == own,
            // Every namespace's PeerAuthentications: a client reads the destination's to
            // know whether it takes mTLS (a DISABLE policy there means plaintext).
            Kind::WorkloadEntry | Kind::Gateway | Kind::ConfigMap | Kind::PeerAuthentication => {
                true
            }
        }
    }

    /// Whether a proxy of this view needs `object`: Istio's `exportTo`, the Sidecar's egress
    /// hosts, endpoints of visible services and workloads of none, the Sidecars that may
    /// apply to it, Gateways.
    fn admits(
        &self,
        objects: &Objects,
        sidecar: Option<&Sidecar>,
        key: &Key,
        object: &Object,
    ) -> bool {
        if !self.may_admit(sidecar, key) {
            return false;
        }
        let r = &object.resource;
        match &r.spec {
            Spec::Service(_)
            | Spec::ServiceEntry(_)
            | Spec::VirtualService(_)
            | Spec::DestinationRule(_) => {
                scope::exported_to(r, &self.key.namespace)
                    && sidecar.is_none_or(|sc| {
                        scope::egress_admits(sc, &self.key.namespace, r.namespace(), &object.hosts)
                    })
            }
            // One no service selects goes to every view: a destination names such a caller
            // by its address, as TCP carries no peer metadata.
            Spec::WorkloadEntry(_) => {
                let selecting = objects.selecting(key);
                selecting.is_empty() || selecting.iter().any(|s| self.services.contains(s))
            }
            // Only those its Gateways name, and the discovery stream sends them only to a
            // proxy whose certificate proves that namespace.
            Spec::Secret(_) => self.key.credentials.contains(r.name()),
            _ => true,
        }
    }
}

/// Services, ServiceEntries and Sidecars are decided first, because they decide which
/// WorkloadEntries are, which come last.
fn rank(kind: Kind) -> u8 {
    match kind {
        Kind::Service | Kind::ServiceEntry | Kind::Sidecar => 0,
        Kind::WorkloadEntry => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Source;
    use std::path::Path;

    fn objects(yaml: &str) -> Objects {
        let loaded = weft_api::load::load_str(yaml, Path::new("test.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let mut objects = Objects::default();
        for r in loaded.resources {
            objects.insert(Key::of(&r), Object::new(r, Source::Config));
        }
        objects.settle();
        objects
    }

    const MESH: &str = "
apiVersion: v1
kind: Service
metadata: {name: a, namespace: one}
spec: {selector: {app: a}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: two}
spec: {selector: {app: b}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: a-1, namespace: one}
spec: {address: 10.0.0.1, labels: {app: a}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: b-1, namespace: two}
spec: {address: 10.0.0.2, labels: {app: b}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: loner, namespace: two}
spec: {address: 10.0.0.3, labels: {app: nobody}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: two}
spec: {hosts: [b], http: [{route: [{destination: {host: b}}]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: one}
spec: {egress: [{hosts: [./*, istio-system/*]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: two}
spec: {}
";

    #[test]
    fn building_a_view_admits_what_deciding_every_object_does() {
        let objects = objects(MESH);
        let sidecar = Key {
            kind: Kind::Sidecar,
            namespace: "one".into(),
            name: "default".into(),
        };
        for (namespace, sidecar) in [("one", Some(sidecar)), ("two", None)] {
            let key = ViewKey {
                namespace: namespace.into(),
                sidecar,
                credentials: BTreeSet::new(),
            };
            let built = View::build(key.clone(), &objects);
            let mut every = View::build(key, &Objects::default());
            every.refresh(&objects, objects.keys().cloned().collect());
            let names = |v: &View| {
                let mut keys: Vec<String> = v.keys().map(ToString::to_string).collect();
                keys.sort();
                keys
            };
            assert_eq!(names(&built), names(&every), "namespace {namespace}");
            assert_eq!(built.version(), every.version());
        }
        // The Sidecar scopes namespace one to itself, but a workload no service selects
        // goes everywhere.
        let one = View::build(
            ViewKey {
                namespace: "one".into(),
                sidecar: Some(Key {
                    kind: Kind::Sidecar,
                    namespace: "one".into(),
                    name: "default".into(),
                }),
                credentials: BTreeSet::new(),
            },
            &objects,
        );
        let mut held: Vec<String> = one.keys().map(|k| k.name.clone()).collect();
        held.sort();
        assert_eq!(held, ["a", "a-1", "default", "loner"]);
    }
}

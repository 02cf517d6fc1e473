//! Every object the control plane knows, config and announced workloads alike, each encoded
//! once for the wire, with the indexes that let a change find what it affects.

use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use weft_api::{scope, types, Kind, Resource, Spec};
use weft_discovery::wire::{self, Key};

/// Where an object came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Applied or read from the config directory.
    Config,
    /// A proxy that connected and announced its workload.
    Announced,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub resource: Arc<Resource>,
    /// The object as proxies receive it; shared by every stream that sends it.
    pub json: Bytes,
    pub digest: u64,
    /// The fully qualified hosts it is about (`scope::hosts`).
    pub hosts: Vec<String>,
    pub source: Source,
}

impl Object {
    /// Stamps the resource with its `resourceVersion`, a digest of its content, so the same
    /// content has the same version however it arrived (applied, edited in the directory,
    /// read after a restart).
    pub fn new(mut resource: Resource, source: Source) -> Object {
        resource.metadata.resource_version = None;
        let version = wire::content_hash(&wire::to_json(&resource));
        resource.metadata.resource_version = Some(format!("{:012x}", version & 0xffff_ffff_ffff));
        let json = wire::to_json(&resource);
        Object {
            digest: wire::content_hash(&json),
            hosts: scope::hosts(&resource),
            resource: Arc::new(resource),
            json,
            source,
        }
    }

    pub fn resource_version(&self) -> &str {
        self.resource
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub struct Objects {
    map: HashMap<Key, Object>,
    /// Services and ServiceEntries by namespace: what can select a WorkloadEntry there.
    services: HashMap<String, BTreeSet<Key>>,
    workload_entries: HashMap<String, BTreeSet<Key>>,
    sidecars: BTreeSet<Key>,
}

impl Objects {
    pub fn get(&self, key: &Key) -> Option<&Object> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Object)> {
        self.map.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.map.keys()
    }

    pub fn insert(&mut self, key: Key, object: Object) -> Option<Object> {
        if let Some(index) = self.index_mut(key.kind) {
            index
                .entry(key.namespace.clone())
                .or_default()
                .insert(key.clone());
        }
        if key.kind == Kind::Sidecar {
            self.sidecars.insert(key.clone());
        }
        self.map.insert(key, object)
    }

    pub fn remove(&mut self, key: &Key) -> Option<Object> {
        if let Some(index) = self.index_mut(key.kind) {
            if let Some(keys) = index.get_mut(&key.namespace) {
                keys.remove(key);
                if keys.is_empty() {
                    index.remove(&key.namespace);
                }
            }
        }
        self.sidecars.remove(key);
        self.map.remove(key)
    }

    fn index_mut(&mut self, kind: Kind) -> Option<&mut HashMap<String, BTreeSet<Key>>> {
        match kind {
            Kind::Service | Kind::ServiceEntry => Some(&mut self.services),
            Kind::WorkloadEntry => Some(&mut self.workload_entries),
            _ => None,
        }
    }

    pub fn workload_entries_in(&self, namespace: &str) -> impl Iterator<Item = &Key> {
        self.workload_entries.get(namespace).into_iter().flatten()
    }

    /// The Sidecar that applies to a workload, as `scope::applicable_sidecar` picks it.
    pub fn sidecar_for(
        &self,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<Key> {
        let sidecars = self
            .sidecars
            .iter()
            .filter_map(|k| self.map.get(k))
            .map(|o| o.resource.as_ref());
        scope::applicable_sidecar(sidecars, namespace, labels).map(|(r, _)| Key::of(r))
    }

    /// The Services and ServiceEntries whose selectors pick a WorkloadEntry.
    pub fn selecting(&self, workload_entry: &Key) -> Vec<&Key> {
        let Some(Spec::WorkloadEntry(we)) = self.get(workload_entry).map(|o| &o.resource.spec)
        else {
            return Vec::new();
        };
        self.services
            .get(&workload_entry.namespace)
            .into_iter()
            .flatten()
            .filter(|k| {
                self.get(k).is_some_and(|o| match &o.resource.spec {
                    Spec::Service(s) => {
                        !s.selector.is_empty() && types::labels_match(&s.selector, &we.labels)
                    }
                    Spec::ServiceEntry(se) => se
                        .workload_selector
                        .as_ref()
                        .is_some_and(|s| types::labels_match(&s.labels, &we.labels)),
                    _ => false,
                })
            })
            .collect()
    }
}

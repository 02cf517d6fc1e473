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
    gateways: BTreeSet<Key>,
    /// DestinationRules that name a `credentialName`.
    credential_rules: BTreeSet<Key>,
    /// Services and ServiceEntries by one pair of their selector (namespace, label, value):
    /// a WorkloadEntry's candidates are found through its own labels, not by trying every
    /// service of its namespace.
    by_selector: HashMap<(String, String, String), BTreeSet<Key>>,
    /// Which Services and ServiceEntries select each WorkloadEntry.
    selected_by: HashMap<Key, Vec<Key>>,
    /// The WorkloadEntries none selects.
    unselected: BTreeSet<Key>,
    /// Namespaces whose services changed since the last `settle`.
    unsettled: BTreeSet<String>,
}

/// The labels a Service (`selector`) or ServiceEntry (`workloadSelector`) selects by.
fn selector(object: &Object) -> Option<&std::collections::BTreeMap<String, String>> {
    match &object.resource.spec {
        Spec::Service(s) if !s.selector.is_empty() => Some(&s.selector),
        Spec::ServiceEntry(se) => se
            .workload_selector
            .as_ref()
            .map(|s| &s.labels)
            .filter(|l| !l.is_empty()),
        _ => None,
    }
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

    /// Adds or replaces an object; call [`Objects::settle`] after a batch of changes.
    pub fn insert(&mut self, key: Key, object: Object) -> Option<Object> {
        self.unindex_selector(&key);
        if let Some((k, v)) = selector(&object).and_then(|s| s.iter().next()) {
            self.by_selector
                .entry((key.namespace.clone(), k.clone(), v.clone()))
                .or_default()
                .insert(key.clone());
        }
        if matches!(key.kind, Kind::Service | Kind::ServiceEntry) {
            self.unsettled.insert(key.namespace.clone());
        }
        if let Some(index) = self.index_mut(key.kind) {
            index
                .entry(key.namespace.clone())
                .or_default()
                .insert(key.clone());
        }
        match key.kind {
            Kind::Sidecar => self.sidecars.insert(key.clone()),
            Kind::Gateway => self.gateways.insert(key.clone()),
            Kind::DestinationRule => match &object.resource.spec {
                Spec::DestinationRule(dr) if dr.credentials().next().is_some() => {
                    self.credential_rules.insert(key.clone())
                }
                _ => self.credential_rules.remove(&key),
            },
            _ => false,
        };
        let previous = self.map.insert(key.clone(), object);
        if key.kind == Kind::WorkloadEntry {
            let selected_by = self.find_selecting(&key);
            self.set_selected_by(key, selected_by);
        }
        previous
    }

    pub fn remove(&mut self, key: &Key) -> Option<Object> {
        self.unindex_selector(key);
        self.selected_by.remove(key);
        self.unselected.remove(key);
        if matches!(key.kind, Kind::Service | Kind::ServiceEntry) {
            self.unsettled.insert(key.namespace.clone());
        }
        if let Some(index) = self.index_mut(key.kind) {
            if let Some(keys) = index.get_mut(&key.namespace) {
                keys.remove(key);
                if keys.is_empty() {
                    index.remove(&key.namespace);
                }
            }
        }
        self.sidecars.remove(key);
        self.gateways.remove(key);
        self.credential_rules.remove(key);
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

    /// The Secrets of its own namespace a workload reads: those the TLS servers of the
    /// Gateways selecting it name, and the `credentialName`s of DestinationRules, as Istio
    /// reads them: a gateway's from every rule, a sidecar's only from rules whose
    /// `workloadSelector` selects it.
    pub fn credentials_for(
        &self,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> BTreeSet<String> {
        let mut gateway = false;
        let mut names = BTreeSet::new();
        for (_, spec) in self.specs(&self.gateways) {
            let Spec::Gateway(g) = spec else { continue };
            if !types::labels_match(&g.selector, labels) {
                continue;
            }
            gateway = true;
            for tls in g.servers.iter().filter_map(|s| s.tls.as_ref()) {
                names.extend(tls.credential().map(str::to_string));
                names.extend(tls.ca_credential());
            }
        }
        for (key, spec) in self.specs(&self.credential_rules) {
            let Spec::DestinationRule(dr) = spec else {
                continue;
            };
            let read = if dr.workload_selector.is_some() {
                dr.selects(&key.namespace, namespace, labels)
            } else {
                gateway
            };
            if read {
                for name in dr.credentials() {
                    names.insert(name.to_string());
                    names.insert(format!("{name}-cacert"));
                }
            }
        }
        names
    }

    fn specs<'s>(&'s self, keys: &'s BTreeSet<Key>) -> impl Iterator<Item = (&'s Key, &'s Spec)> {
        keys.iter()
            .filter_map(|k| self.map.get(k).map(|o| (k, &o.resource.spec)))
    }

    fn unindex_selector(&mut self, key: &Key) {
        let Some((k, v)) = self
            .map
            .get(key)
            .and_then(selector)
            .and_then(|s| s.iter().next())
            .map(|(k, v)| (k.clone(), v.clone()))
        else {
            return;
        };
        let slot = (key.namespace.clone(), k, v);
        if let Some(keys) = self.by_selector.get_mut(&slot) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_selector.remove(&slot);
            }
        }
    }

    /// Re-decides which services select the WorkloadEntries of namespaces whose services
    /// changed.
    pub fn settle(&mut self) {
        for ns in std::mem::take(&mut self.unsettled) {
            let entries: Vec<Key> = self.workload_entries_in(&ns).cloned().collect();
            for we in entries {
                let selected_by = self.find_selecting(&we);
                self.set_selected_by(we, selected_by);
            }
        }
    }

    fn set_selected_by(&mut self, workload_entry: Key, selected_by: Vec<Key>) {
        if selected_by.is_empty() {
            self.unselected.insert(workload_entry.clone());
        } else {
            self.unselected.remove(&workload_entry);
        }
        self.selected_by.insert(workload_entry, selected_by);
    }

    /// The WorkloadEntries no Service or ServiceEntry selects.
    pub fn unselected(&self) -> impl Iterator<Item = &Key> {
        self.unselected.iter()
    }

    /// The Services and ServiceEntries whose selectors pick a WorkloadEntry.
    pub fn selecting(&self, workload_entry: &Key) -> &[Key] {
        self.selected_by
            .get(workload_entry)
            .map_or(&[], Vec::as_slice)
    }

    fn find_selecting(&self, workload_entry: &Key) -> Vec<Key> {
        let Some(Spec::WorkloadEntry(we)) = self.get(workload_entry).map(|o| &o.resource.spec)
        else {
            return Vec::new();
        };
        let mut found: Vec<Key> = we
            .labels
            .iter()
            .filter_map(|(k, v)| {
                self.by_selector
                    .get(&(workload_entry.namespace.clone(), k.clone(), v.clone()))
            })
            .flatten()
            .filter(|s| {
                self.get(s)
                    .and_then(selector)
                    .is_some_and(|sel| types::labels_match(sel, &we.labels))
            })
            .cloned()
            .collect();
        found.sort();
        found.dedup();
        found
    }
}

//! The cluster's objects as the watches deliver them, and the config they stand for, one
//! partition per object: a Service as itself, an Istio resource as itself, and a pod that
//! an EndpointSlice lists as ready as the WorkloadEntry Weft's registry selects by labels
//! (the pod's labels, service account and address; the slices' port numbers by name). The
//! `istio` ConfigMap of `istio-system` is the MeshConfig, as istiod reads it; TLS and
//! generic Secrets are what `credentialName` names.
//! Pure: events in, changed partitions out; the source runs the watches.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// An Istio kind the control plane watches, once its CRD exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IstioKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

impl IstioKind {
    /// `virtualservices.networking.istio.io`, the CRD's name.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    fn partition_kind(&self) -> String {
        format!("{}/{}", self.group, self.kind)
    }
}

const fn istio(group: &'static str, kind: &'static str, plural: &'static str) -> IstioKind {
    IstioKind {
        group,
        version: "v1",
        kind,
        plural,
    }
}

/// Istio's kinds that Weft implements, at the version istiod reads.
pub const ISTIO_KINDS: [IstioKind; 10] = [
    istio("networking.istio.io", "VirtualService", "virtualservices"),
    istio("networking.istio.io", "DestinationRule", "destinationrules"),
    istio("networking.istio.io", "Gateway", "gateways"),
    istio("networking.istio.io", "ServiceEntry", "serviceentries"),
    istio("networking.istio.io", "Sidecar", "sidecars"),
    istio("networking.istio.io", "WorkloadEntry", "workloadentries"),
    istio(
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    istio(
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
    ),
    istio(
        "security.istio.io",
        "RequestAuthentication",
        "requestauthentications",
    ),
    istio("telemetry.istio.io", "Telemetry", "telemetries"),
];

const ROOT: &str = "kubernetes";
const SERVICE: &str = "Service";
const CONFIG_MAP: &str = "ConfigMap";
const SECRET: &str = "Secret";
/// The Secret types a credentialName can name (not service account tokens, not registry
/// credentials).
const CREDENTIAL_TYPES: [&str; 3] = ["kubernetes.io/tls", "Opaque", "istio.io/key-and-cert"];
/// The ConfigMap istiod reads its MeshConfig from, in the root namespace.
pub const MESH_CONFIG_MAP: &str = "istio";
/// A pod's partition: the WorkloadEntry it stands for while ready.
const POD: &str = "Pod";
/// The label an EndpointSlice names its Service by.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

type ObjKey = (String, String);

/// One object's partition: `kubernetes/<kind>/<namespace>/<name>`.
pub fn partition(kind: &str, namespace: &str, name: &str) -> PathBuf {
    Path::new(ROOT).join(kind).join(namespace).join(name)
}

/// The kind, namespace and name of a partition this index makes.
fn parse(partition: &Path) -> Option<(String, String, String)> {
    let rest = partition.strip_prefix(ROOT).ok()?;
    let parts: Vec<&str> = rest.iter().filter_map(|p| p.to_str()).collect();
    let [kind @ .., namespace, name] = parts.as_slice() else {
        return None;
    };
    (!kind.is_empty()).then(|| (kind.join("/"), namespace.to_string(), name.to_string()))
}

/// The Istio object a partition holds, if it holds one.
pub fn istio_object(partition: &Path) -> Option<(IstioKind, String, String)> {
    let (kind, namespace, name) = parse(partition)?;
    let istio = ISTIO_KINDS.iter().find(|k| k.partition_kind() == kind)?;
    Some((*istio, namespace, name))
}

pub fn owns(partition: &Path) -> bool {
    parse(partition).is_some()
}

/// The objects of one kind, and a relist in progress.
#[derive(Debug)]
struct Store<K> {
    objects: BTreeMap<ObjKey, K>,
    relist: Option<BTreeMap<ObjKey, K>>,
    synced: bool,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

fn key_of<K: kube::Resource>(k: &K) -> ObjKey {
    (k.namespace().unwrap_or_default(), k.name_any())
}

impl<K: kube::Resource + Clone> Store<K> {
    /// Applies one event; returns each object that changed (appeared, changed or went)
    /// with what it was before. A relist replaces the kind's objects whole when it is done,
    /// so one deleted while the watch was away goes too.
    fn apply(&mut self, event: Event<K>) -> Vec<(ObjKey, Option<K>)> {
        match event {
            Event::Apply(k) => {
                let key = key_of(&k);
                let old = self.objects.insert(key.clone(), k);
                vec![(key, old)]
            }
            Event::Delete(k) => {
                let key = key_of(&k);
                match self.objects.remove(&key) {
                    Some(old) => vec![(key, Some(old))],
                    None => Vec::new(),
                }
            }
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(k) => {
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key_of(&k), k);
                Vec::new()
            }
            Event::InitDone => {
                self.synced = true;
                let listed = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.objects, listed);
                let mut changed: Vec<(ObjKey, Option<K>)> = self
                    .objects
                    .keys()
                    .filter(|key| !old.contains_key(*key))
                    .map(|key| (key.clone(), None))
                    .collect();
                for (key, was) in old {
                    let kept = self.objects.get(&key).is_some_and(|now| {
                        now.resource_version().is_some()
                            && now.resource_version() == was.resource_version()
                    });
                    if !kept {
                        changed.push((key, Some(was)));
                    }
                }
                changed
            }
        }
    }
}

fn is_credential(s: &Secret) -> bool {
    CREDENTIAL_TYPES.contains(&s.type_.as_deref().unwrap_or("Opaque"))
}

/// A pod as one EndpointSlice lists it.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    address: String,
    ports: BTreeMap<String, u16>,
}

/// What the watches have delivered so far.
#[derive(Debug, Default)]
pub struct Index {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    istio: BTreeMap<IstioKind, Store<DynamicObject>>,
    /// Per pod: the slices that list it as ready, each with the address it gives and its
    /// ports by name.
    ready_in: BTreeMap<ObjKey, BTreeMap<String, Listed>>,
}

impl Index {
    pub fn services(&mut self, event: Event<Service>) -> BTreeSet<PathBuf> {
        self.services
            .apply(event)
            .into_iter()
            .map(|((ns, name), _)| partition(SERVICE, &ns, &name))
            .collect()
    }

    pub fn endpoint_slices(&mut self, event: Event<EndpointSlice>) -> BTreeSet<PathBuf> {
        let mut pods = BTreeSet::new();
        for ((ns, slice), old) in self.slices.apply(event) {
            if let Some(old) = old {
                for (pod, _) in ready_pods(&old) {
                    let key = (ns.clone(), pod);
                    if let Some(slices) = self.ready_in.get_mut(&key) {
                        slices.remove(&slice);
                        if slices.is_empty() {
                            self.ready_in.remove(&key);
                        }
                    }
                    pods.insert(key);
                }
            }
            if let Some(now) = self.slices.objects.get(&(ns.clone(), slice.clone())) {
                for (pod, listed) in ready_pods(now) {
                    let key = (ns.clone(), pod);
                    self.ready_in
                        .entry(key.clone())
                        .or_default()
                        .insert(slice.clone(), listed);
                    pods.insert(key);
                }
            }
        }
        pods.into_iter()
            .map(|(ns, name)| partition(POD, &ns, &name))
            .collect()
    }

    pub fn pods(&mut self, event: Event<Pod>) -> BTreeSet<PathBuf> {
        self.pods
            .apply(event)
            .into_iter()
            .map(|((ns, name), _)| partition(POD, &ns, &name))
            .collect()
    }

    /// Namespaces are kept for the root's ConfigMaps; no config stands for them.
    pub fn namespaces(&mut self, event: Event<Namespace>) -> BTreeSet<PathBuf> {
        self.namespaces.apply(event);
        BTreeSet::new()
    }

    /// The root namespace's ConfigMaps; only `istio` is config.
    pub fn config_maps(&mut self, event: Event<ConfigMap>) -> BTreeSet<PathBuf> {
        self.config_maps
            .apply(event)
            .into_iter()
            .filter(|((_, name), _)| name == MESH_CONFIG_MAP)
            .map(|((ns, name), _)| partition(CONFIG_MAP, &ns, &name))
            .collect()
    }

    /// Secrets a Gateway's or DestinationRule's `credentialName` may name.
    pub fn secrets(&mut self, event: Event<Secret>) -> BTreeSet<PathBuf> {
        self.secrets
            .apply(event)
            .into_iter()
            .map(|((ns, name), _)| partition(SECRET, &ns, &name))
            .collect()
    }

    pub fn istio(&mut self, kind: IstioKind, event: Event<DynamicObject>) -> BTreeSet<PathBuf> {
        let store = self.istio.entry(kind).or_default();
        store
            .apply(event)
            .into_iter()
            .map(|((ns, name), _)| partition(&kind.partition_kind(), &ns, &name))
            .collect()
    }

    /// Whether the first list of the core kinds, and of each Istio kind being watched, is
    /// in: until then the registry would be partial.
    pub fn synced(&self) -> bool {
        self.services.synced
            && self.slices.synced
            && self.pods.synced
            && self.namespaces.synced
            && self.config_maps.synced
            && self.secrets.synced
            && self.istio.values().all(|s| s.synced)
    }

    pub fn watching(&mut self, kind: IstioKind) {
        self.istio.entry(kind).or_default();
    }

    /// The namespaces the cluster has, but those being deleted.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces
            .objects
            .iter()
            .filter(|(_, n)| n.metadata.deletion_timestamp.is_none())
            .map(|((_, name), _)| name.clone())
            .collect()
    }

    /// Every partition with config in it.
    pub fn partitions(&self) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = self
            .services
            .objects
            .keys()
            .map(|(ns, name)| partition(SERVICE, ns, name))
            .collect();
        all.extend(
            self.config_maps
                .objects
                .keys()
                .filter(|(_, name)| name == MESH_CONFIG_MAP)
                .map(|(ns, name)| partition(CONFIG_MAP, ns, name)),
        );
        all.extend(
            self.secrets
                .objects
                .iter()
                .filter(|(_, s)| is_credential(s))
                .map(|((ns, name), _)| partition(SECRET, ns, name)),
        );
        for (kind, store) in &self.istio {
            all.extend(
                store
                    .objects
                    .keys()
                    .map(|(ns, name)| partition(&kind.partition_kind(), ns, name)),
            );
        }
        all.extend(
            self.ready_in
                .keys()
                .map(|(ns, name)| partition(POD, ns, name)),
        );
        all
    }

    /// The config document a partition holds now; `None` when it holds none.
    pub fn read(&self, partition: &Path) -> Option<Value> {
        let (kind, ns, name) = parse(partition)?;
        let key = (ns, name);
        match kind.as_str() {
            SERVICE => self.services.objects.get(&key).map(service_document),
            SECRET => self
                .secrets
                .objects
                .get(&key)
                .filter(|s| is_credential(s))
                .map(|s| {
                    let mut doc = document("v1", SECRET, &s.metadata, json!({}));
                    doc.as_object_mut().map(|o| o.remove("spec"));
                    doc["type"] = json!(s.type_.clone().unwrap_or_else(|| "Opaque".into()));
                    doc["data"] = serde_json::to_value(&s.data).unwrap_or_default();
                    doc
                }),
            CONFIG_MAP if key.1 == MESH_CONFIG_MAP => self.config_maps.objects.get(&key).map(|c| {
                let mut doc = document("v1", CONFIG_MAP, &c.metadata, json!({}));
                doc.as_object_mut().map(|o| o.remove("spec"));
                doc["data"] = json!(c.data.clone().unwrap_or_default());
                doc
            }),
            POD => self.workload_entry(&key),
            _ => {
                let (_, store) = self
                    .istio
                    .iter()
                    .find(|(k, _)| k.partition_kind() == kind)?;
                store.objects.get(&key).map(istio_document)
            }
        }
    }

    /// A ready pod as Istio's registry sees it: an endpoint at the address its slices give
    /// (the pod's IP), with its labels and service account. Pods that failed or finished
    /// are no endpoints, whatever a slice says.
    fn workload_entry(&self, key: &ObjKey) -> Option<Value> {
        let slices = self.ready_in.get(key)?;
        let pod = self.pods.objects.get(key)?;
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Failed" | "Succeeded")) {
            return None;
        }
        let address = slices
            .values()
            .map(|l| l.address.as_str())
            .find(|a| !a.is_empty())
            .or(status.pod_ip.as_deref())
            .filter(|ip| !ip.is_empty())?;
        let mut labels = pod.labels().clone();
        labels
            .entry(weft_control::registrations::WORKLOAD_NAME_LABEL.into())
            .or_insert_with(|| workload_name(pod));
        let ports: BTreeMap<&String, &u16> = slices.values().flat_map(|l| &l.ports).collect();
        let mut spec = json!({
            "address": address,
            "labels": labels,
            "serviceAccount": pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        });
        if !ports.is_empty() {
            spec["ports"] = json!(ports);
        }
        Some(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": key.1, "namespace": key.0},
            "spec": spec,
        }))
    }
}

/// The pods a slice lists as ready (a missing condition is ready, as Kubernetes reads
/// it), with the slice's ports by name.
fn ready_pods(slice: &EndpointSlice) -> Vec<(String, Listed)> {
    if slice.labels().get(SERVICE_NAME_LABEL).is_none() {
        return Vec::new();
    }
    let ports: BTreeMap<String, u16> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok()?;
            Some((p.name.clone().unwrap_or_default(), port))
        })
        .filter(|(name, _)| !name.is_empty())
        .collect();
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| {
            let target = e.target_ref.as_ref()?;
            if target.kind.as_deref() != Some("Pod") {
                return None;
            }
            let listed = Listed {
                address: e.addresses.first().cloned().unwrap_or_default(),
                ports: ports.clone(),
            };
            Some((target.name.clone()?, listed))
        })
        .collect()
}

/// The Deployment a pod belongs to, through its ReplicaSet (whose name is the
/// Deployment's and the template's hash), else its owner, else the pod itself.
fn workload_name(pod: &Pod) -> String {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => {
            let hash = pod.labels().get("pod-template-hash");
            match hash.and_then(|h| o.name.strip_suffix(&format!("-{h}"))) {
                Some(deployment) => deployment.to_string(),
                None => o.name.clone(),
            }
        }
        Some(o) => o.name.clone(),
        None => pod.name_any(),
    }
}

/// What config reads of an object: its kind, name, namespace, labels and annotations,
/// and its spec; not its status or the server's bookkeeping.
fn document(api_version: &str, kind: &str, meta: &kube::api::ObjectMeta, spec: Value) -> Value {
    let mut metadata = json!({
        "name": meta.name.clone().unwrap_or_default(),
        "namespace": meta.namespace.clone().unwrap_or_else(|| "default".into()),
    });
    if let Some(labels) = meta.labels.as_ref().filter(|l| !l.is_empty()) {
        metadata["labels"] = json!(labels);
    }
    if let Some(annotations) = meta
        .annotations
        .as_ref()
        .map(|a| {
            a.iter()
                .filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|a| !a.is_empty())
    {
        metadata["annotations"] = json!(annotations);
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec})
}

fn service_document(s: &Service) -> Value {
    let spec = s
        .spec
        .as_ref()
        .and_then(|spec| serde_json::to_value(spec).ok())
        .unwrap_or_else(|| json!({}));
    document("v1", SERVICE, &s.metadata, spec)
}

fn istio_document(o: &DynamicObject) -> Value {
    let types = o.types.as_ref();
    document(
        types.map_or("", |t| t.api_version.as_str()),
        types.map_or("", |t| t.kind.as_str()),
        &o.metadata,
        o.data.get("spec").cloned().unwrap_or_else(|| json!({})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ApiResource;

    fn object<K: serde::de::DeserializeOwned>(v: Value) -> K {
        serde_json::from_value(v).unwrap()
    }

    fn reviews_service() -> Service {
        object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "default", "resourceVersion": "10",
                "labels": {"app": "reviews"}, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"selector": {"app": "reviews"}, "clusterIP": "10.96.0.20",
                "ports": [{"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {}},
        }))
    }

    fn reviews_pod(name: &str, ip: &str, phase: &str) -> Pod {
        object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "11",
                "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "5d4f8c7b9",
                    "security.istio.io/tlsMode": "istio"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "reviews-v1-5d4f8c7b9", "uid": "u1", "controller": true}]},
            "spec": {"serviceAccountName": "bookinfo-reviews", "containers": []},
            "status": {"phase": phase, "podIP": ip},
        }))
    }

    fn slice(name: &str, version: &str, endpoints: Value) -> EndpointSlice {
        object(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": version,
                "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
    }

    fn endpoint(pod: &str, ip: &str, ready: bool) -> Value {
        json!({"addresses": [ip], "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}})
    }

    fn load(index: &Index, partition: &Path) -> weft_api::Resource {
        let doc = index.read(partition).expect("the partition holds config");
        let loaded = weft_api::load_str(&doc.to_string(), partition);
        assert!(
            !loaded.has_errors(),
            "{:?}",
            loaded.errors().collect::<Vec<_>>()
        );
        loaded.resources.into_iter().next().unwrap()
    }

    fn paths(list: &[&str]) -> BTreeSet<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn a_service_is_config_without_the_servers_bookkeeping() {
        let mut index = Index::default();
        let changed = index.services(Event::Apply(reviews_service()));
        assert_eq!(changed, paths(&["kubernetes/Service/default/reviews"]));
        let r = load(&index, Path::new("kubernetes/Service/default/reviews"));
        assert_eq!(r.display_name(), "Service default/reviews");
        let weft_api::Spec::Service(s) = &r.spec else {
            panic!("{r:?}")
        };
        assert_eq!(s.cluster_ip.as_deref(), Some("10.96.0.20"));
        assert_eq!(s.ports[0].port, 9080);
        let doc = index
            .read(Path::new("kubernetes/Service/default/reviews"))
            .unwrap();
        assert!(doc["metadata"].get("managedFields").is_none() && doc.get("status").is_none());
        assert_eq!(
            index.services(Event::Delete(reviews_service())),
            paths(&["kubernetes/Service/default/reviews"])
        );
        assert!(index
            .read(Path::new("kubernetes/Service/default/reviews"))
            .is_none());
    }

    #[test]
    fn a_pod_a_slice_lists_as_ready_is_a_workload_entry() {
        let mut index = Index::default();
        index.pods(Event::Apply(reviews_pod(
            "reviews-v1-abc",
            "10.1.0.7",
            "Running",
        )));
        // Not listed by any slice yet: no endpoint.
        assert!(index.partitions().is_empty());
        let changed = index.endpoint_slices(Event::Apply(slice(
            "reviews-x1",
            "20",
            json!([endpoint("reviews-v1-abc", "10.1.0.7", true)]),
        )));
        let pod = "kubernetes/Pod/default/reviews-v1-abc";
        assert_eq!(changed, paths(&[pod]));
        let r = load(&index, Path::new(pod));
        let weft_api::Spec::WorkloadEntry(we) = &r.spec else {
            panic!("{r:?}")
        };
        assert_eq!(we.address, "10.1.0.7");
        assert_eq!(we.service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(we.labels["security.istio.io/tlsMode"], "istio");
        // The Deployment's name, through its ReplicaSet, as metrics name the workload.
        assert_eq!(we.labels["service.istio.io/workload-name"], "reviews-v1");
        assert_eq!(we.ports.get("http"), Some(&9080));

        // No longer ready: no endpoint, and the partition says so.
        let changed = index.endpoint_slices(Event::Apply(slice(
            "reviews-x1",
            "21",
            json!([endpoint("reviews-v1-abc", "10.1.0.7", false)]),
        )));
        assert_eq!(changed, paths(&[pod]));
        assert!(index.read(Path::new(pod)).is_none());

        // Ready again, then the pod fails: a failed pod is no endpoint.
        index.endpoint_slices(Event::Apply(slice(
            "reviews-x1",
            "22",
            json!([endpoint("reviews-v1-abc", "10.1.0.7", true)]),
        )));
        assert!(index.read(Path::new(pod)).is_some());
        index.pods(Event::Apply(reviews_pod(
            "reviews-v1-abc",
            "10.1.0.7",
            "Failed",
        )));
        assert!(index.read(Path::new(pod)).is_none());

        // The address is the slice's, as Istio takes endpoints from EndpointSlices.
        index.pods(Event::Apply(reviews_pod(
            "reviews-v1-abc",
            "10.1.0.7",
            "Running",
        )));
        index.endpoint_slices(Event::Apply(slice(
            "reviews-x1",
            "23",
            json!([endpoint("reviews-v1-abc", "10.1.0.9", true)]),
        )));
        let doc = index.read(Path::new(pod)).unwrap();
        assert_eq!(doc["spec"]["address"], "10.1.0.9");
    }

    #[test]
    fn the_istio_config_map_is_the_mesh_config() {
        let mut index = Index::default();
        let map = |name: &str| -> ConfigMap {
            object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "istio-system"},
                "data": {"mesh": "accessLogFile: /dev/stdout\n"}}))
        };
        assert!(index.config_maps(Event::Apply(map("other"))).is_empty());
        let changed = index.config_maps(Event::Apply(map("istio")));
        assert_eq!(changed, paths(&["kubernetes/ConfigMap/istio-system/istio"]));
        let r = load(&index, Path::new("kubernetes/ConfigMap/istio-system/istio"));
        let weft_api::Spec::MeshConfig(mesh) = &r.spec else {
            panic!("{r:?}")
        };
        assert_eq!(mesh.access_log_file.as_deref(), Some("/dev/stdout"));
    }

    #[test]
    fn credential_secrets_are_config_and_service_account_tokens_are_not() {
        let mut index = Index::default();
        let secret = |name: &str, type_: &str| -> Secret {
            object(json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
                "metadata": {"name": name, "namespace": "istio-system"},
                "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}))
        };
        index.secrets(Event::Apply(secret(
            "bookinfo-credential",
            "kubernetes.io/tls",
        )));
        index.secrets(Event::Apply(secret(
            "token",
            "kubernetes.io/service-account-token",
        )));
        assert_eq!(
            index.partitions(),
            [PathBuf::from(
                "kubernetes/Secret/istio-system/bookinfo-credential"
            )]
        );
        let r = load(
            &index,
            Path::new("kubernetes/Secret/istio-system/bookinfo-credential"),
        );
        let weft_api::Spec::Secret(s) = &r.spec else {
            panic!("{r:?}")
        };
        assert_eq!(
            s.data.get("tls.crt").map(|d| d.as_slice()),
            Some(&b"cert"[..])
        );
        assert!(index
            .read(Path::new("kubernetes/Secret/istio-system/token"))
            .is_none());
    }

    #[test]
    fn a_relist_drops_what_was_deleted_while_the_watch_was_away() {
        let mut index = Index::default();
        for event in [
            Event::Init,
            Event::InitApply(slice("a", "1", json!([endpoint("p1", "10.1.0.1", true)]))),
            Event::InitApply(slice("b", "1", json!([endpoint("p2", "10.1.0.2", true)]))),
            Event::InitDone,
        ] {
            index.endpoint_slices(event);
        }
        assert_eq!(index.ready_in.len(), 2);
        // After a 410 Gone the watcher lists again: `b` went meanwhile, `a` is as it was.
        let mut changed = BTreeSet::new();
        for event in [
            Event::Init,
            Event::InitApply(slice("a", "1", json!([endpoint("p1", "10.1.0.1", true)]))),
            Event::InitDone,
        ] {
            changed.extend(index.endpoint_slices(event));
        }
        assert_eq!(changed, paths(&["kubernetes/Pod/default/p2"]));
        assert!(!index
            .ready_in
            .contains_key(&("default".into(), "p2".into())));
        assert!(index
            .ready_in
            .contains_key(&("default".into(), "p1".into())));
    }

    #[test]
    fn istio_resources_are_config_as_written_and_sync_waits_for_every_list() {
        let kind = ISTIO_KINDS[0];
        let resource = ApiResource {
            group: kind.group.into(),
            version: kind.version.into(),
            api_version: format!("{}/{}", kind.group, kind.version),
            kind: kind.kind.into(),
            plural: kind.plural.into(),
        };
        let mut vs = DynamicObject::new("reviews", &resource).within("default");
        vs.data = json!({"spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}});
        let mut index = Index::default();
        index.watching(kind);
        index.services(Event::Init);
        index.services(Event::InitApply(reviews_service()));
        index.services(Event::InitDone);
        assert!(!index.synced());
        let changed = index.istio(kind, Event::Apply(vs));
        let partition = "kubernetes/networking.istio.io/VirtualService/default/reviews";
        assert_eq!(changed, paths(&[partition]));
        assert_eq!(
            load(&index, Path::new(partition)).display_name(),
            "VirtualService default/reviews"
        );
        assert!(owns(Path::new(partition)) && !owns(Path::new("/etc/weft/reviews.yaml")));
        index.istio(kind, Event::InitDone);
        index.endpoint_slices(Event::InitDone);
        index.pods(Event::InitDone);
        assert!(!index.synced());
        index.namespaces(Event::InitDone);
        index.config_maps(Event::InitDone);
        assert!(!index.synced());
        index.secrets(Event::InitDone);
        assert!(index.synced());
    }
}

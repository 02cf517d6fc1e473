//! Resources on the wire: whole objects as JSON, keyed by kind, namespace and name, and the
//! content-hash versions both ends agree on.

use crate::discovery::{Resource as WireResource, ResourceKey};
use bytes::Bytes;
use std::hash::{Hash, Hasher};
use std::path::Path;
use weft_api::{Kind, Resource};

/// Kind, namespace and name: what identifies an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn of(r: &Resource) -> Key {
        Key {
            kind: r.kind,
            namespace: r.namespace().to_string(),
            name: r.name().to_string(),
        }
    }

    pub fn to_wire(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind.name().to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub fn from_wire(k: &ResourceKey) -> Result<Key, String> {
        let kind = Kind::from_name(&k.kind).ok_or_else(|| {
            format!(
                "unknown kind {:?}: Weft knows {}",
                k.kind,
                Kind::ALL.map(Kind::name).join(", ")
            )
        })?;
        Ok(Key {
            kind,
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        })
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The object as `kubectl get -o json` prints it.
pub fn to_json(r: &Resource) -> Bytes {
    serde_json::to_vec(r)
        .expect("resources serialize to JSON")
        .into()
}

pub fn encode(key: &Key, json: Bytes) -> WireResource {
    WireResource {
        key: Some(key.to_wire()),
        json,
    }
}

/// Reads and validates an object received from the control plane, with the same rules as a
/// file; the error names the object.
pub fn decode(r: &WireResource) -> Result<Resource, String> {
    let key = r
        .key
        .as_ref()
        .ok_or("a resource without a key")
        .and_then(|k| Key::from_wire(k).map_err(|_| "a resource of an unknown kind"))
        .map_err(str::to_string)?;
    let text = std::str::from_utf8(&r.json).map_err(|_| format!("{key}: not UTF-8"))?;
    let loaded = weft_api::load_str(text, Path::new(&format!("{key}")));
    if let Some(e) = loaded.errors().next() {
        return Err(e.to_string());
    }
    match loaded.resources.into_iter().next() {
        Some(resource) if Key::of(&resource) == key => Ok(resource),
        Some(resource) => Err(format!(
            "{key}: the object inside is {}",
            Key::of(&resource)
        )),
        None => Err(format!("{key}: empty object")),
    }
}

/// A stable 64-bit digest of an object's bytes; versions are sums of these.
pub fn content_hash(json: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

/// The version of a set of objects: the sum of their digests, so adding or removing one
/// updates it in O(1) and the same set always has the same version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionSum(u64);

impl VersionSum {
    pub fn add(&mut self, digest: u64) {
        self.0 = self.0.wrapping_add(digest);
    }

    pub fn remove(&mut self, digest: u64) {
        self.0 = self.0.wrapping_sub(digest);
    }

    pub fn version(self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop, resourceVersion: "7"}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}, uri: {regex: "/a.*"}}]
    fault: {delay: {fixedDelay: 2s, percentage: {value: 50}}}
    route: [{destination: {host: reviews, subset: v2}, weight: 100}]
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 100ms, retryOn: "5xx"}
"#;

    #[test]
    fn objects_survive_the_round_trip() {
        let loaded = weft_api::load_str(VS, Path::new("vs.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let original = &loaded.resources[0];
        let key = Key::of(original);
        let wire = encode(&key, to_json(original));
        let back = decode(&wire).unwrap();
        assert_eq!(back.spec, original.spec);
        assert_eq!(back.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(key.to_string(), "VirtualService shop/reviews");
    }

    #[test]
    fn a_mislabelled_object_is_refused() {
        let loaded = weft_api::load_str(VS, Path::new("vs.yaml"));
        let mut wire = encode(
            &Key::of(&loaded.resources[0]),
            to_json(&loaded.resources[0]),
        );
        wire.key.as_mut().unwrap().name = "ratings".into();
        let err = decode(&wire).unwrap_err();
        assert!(
            err.contains("the object inside is VirtualService shop/reviews"),
            "{err}"
        );
    }

    #[test]
    fn versions_depend_on_content_not_order() {
        let (a, b) = (content_hash(b"a"), content_hash(b"b"));
        let mut one = VersionSum::default();
        one.add(a);
        one.add(b);
        let mut other = VersionSum::default();
        other.add(b);
        other.add(a);
        assert_eq!(one, other);
        other.remove(a);
        assert_ne!(one, other);
        other.add(a);
        assert_eq!(one.version(), other.version());
    }
}

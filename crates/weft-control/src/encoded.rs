//! Updates encoded once per view and sent as the same bytes on every stream that needs
//! them: a full snapshot of a large mesh is megabytes, and a copy per proxy made the
//! control plane's memory grow with proxies rather than with views.

use bytes::Bytes;
use prost::Message;
use weft_discovery::discovery::Update;

/// An update as gRPC message bytes, in the two forms a view's members may need.
pub struct Encoded {
    pub version: String,
    pub base_version: String,
    certified: Bytes,
    /// The same bytes as `certified` when the update holds no Secret.
    uncertified: Bytes,
}

impl Encoded {
    pub fn new(mut update: Update) -> Encoded {
        let certified = Bytes::from(update.encode_to_vec());
        let secret = weft_api::Kind::Secret.name();
        let is_secret = |r: &weft_discovery::discovery::Resource| {
            r.key.as_ref().is_some_and(|k| k.kind == secret)
        };
        let uncertified = if update.resources.iter().any(is_secret) {
            update.resources.retain(|r| !is_secret(r));
            Bytes::from(update.encode_to_vec())
        } else {
            certified.clone()
        };
        Encoded {
            version: update.version,
            base_version: update.base_version,
            certified,
            uncertified,
        }
    }

    /// What a stream sends. Secrets go only where a workload certificate proved the proxy's
    /// namespace, and so only over TLS: a proxy on the plaintext port merely claims its
    /// namespace.
    pub fn message(&self, certified: bool) -> Bytes {
        if certified {
            self.certified.clone()
        } else {
            self.uncertified.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_discovery::discovery::{Resource, ResourceKey};

    fn resource(kind: &str) -> Resource {
        Resource {
            key: Some(ResourceKey {
                kind: kind.into(),
                namespace: "default".into(),
                name: "x".into(),
            }),
            json: Bytes::from_static(b"{}"),
        }
    }

    fn kinds(bytes: Bytes) -> Vec<String> {
        let update = Update::decode(bytes).expect("decodes");
        update
            .resources
            .into_iter()
            .map(|r| r.key.unwrap().kind)
            .collect()
    }

    #[test]
    fn secrets_reach_only_certified_streams() {
        let encoded = Encoded::new(Update {
            version: "v2".into(),
            base_version: "v1".into(),
            resources: vec![resource("Secret"), resource("Gateway")],
            ..Default::default()
        });
        assert_eq!(kinds(encoded.message(true)), ["Secret", "Gateway"]);
        assert_eq!(kinds(encoded.message(false)), ["Gateway"]);
        assert_eq!((&*encoded.version, &*encoded.base_version), ("v2", "v1"));
    }

    #[test]
    fn without_secrets_both_forms_share_their_bytes() {
        let encoded = Encoded::new(Update {
            resources: vec![resource("Gateway")],
            ..Default::default()
        });
        assert_eq!(
            encoded.message(true).as_ptr(),
            encoded.message(false).as_ptr()
        );
    }
}

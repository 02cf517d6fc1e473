//! Istio's peer metadata exchange over HTTP. A sidecar names its workload to the sidecar at
//! the other end in `x-envoy-peer-metadata` (a `google.protobuf.Struct`, serialized and
//! base64-encoded, as Istio's proxies write it) and `x-envoy-peer-metadata-id` (its node
//! id): the client's sidecar on the request, the server's on the response. Each end takes
//! the pair off before its app sees the message, and reports the peer in its metrics.

use crate::workload::Workload;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use std::collections::BTreeMap;

pub const METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
pub const ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// Istio's cluster id when none is configured (`global.multiCluster.clusterName`).
pub const CLUSTER: &str = "Kubernetes";

/// A peer's metadata header larger than this is ignored, not decoded.
const MAX_METADATA: usize = 8 * 1024;

/// The labels Istio's injector puts on every pod, which its proxies send as `LABELS`.
const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// The peer at the other end of a call, as its sidecar described itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub workload: String,
    pub namespace: String,
    pub cluster: String,
    pub labels: BTreeMap<String, String>,
}

/// This proxy's own pair of headers, encoded once.
#[derive(Debug, Clone)]
pub struct OwnMetadata {
    metadata: HeaderValue,
    id: HeaderValue,
}

impl OwnMetadata {
    pub fn new(w: &Workload) -> OwnMetadata {
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.to_string())),
        };
        let mut labels: BTreeMap<String, Value> =
            w.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect();
        labels
            .entry(CANONICAL_NAME.into())
            .or_insert_with(|| s(w.canonical_service()));
        labels
            .entry(CANONICAL_REVISION.into())
            .or_insert_with(|| s(w.canonical_revision()));
        let mut fields = BTreeMap::from([
            ("NAME".to_string(), s(w.pod_name())),
            ("NAMESPACE".into(), s(&w.namespace)),
            ("WORKLOAD_NAME".into(), s(&w.name)),
            ("CLUSTER_ID".into(), s(CLUSTER)),
            ("MESH_ID".into(), s("cluster.local")),
            ("SERVICE_ACCOUNT".into(), s(&w.service_account)),
            (
                "OWNER".into(),
                s(&format!(
                    "kubernetes://apis/apps/v1/namespaces/{}/deployments/{}",
                    w.namespace, w.name
                )),
            ),
            (
                "LABELS".into(),
                Value {
                    kind: Some(Kind::StructValue(Struct { fields: labels })),
                },
            ),
        ]);
        if !w.instance_ip.is_empty() {
            fields.insert(
                "INSTANCE_IPS".into(),
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: vec![s(&w.instance_ip)],
                    })),
                },
            );
        }
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(Struct { fields }.encode_to_vec());
        // Istio's node id: `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`.
        let id = format!(
            "sidecar~{}~{}.{}~{}.svc.cluster.local",
            w.instance_ip,
            w.pod_name(),
            w.namespace,
            w.namespace
        );
        OwnMetadata {
            metadata: HeaderValue::from_str(&encoded).expect("base64 is a valid header"),
            id: HeaderValue::from_str(&id)
                .unwrap_or_else(|_| HeaderValue::from_static("sidecar~~unknown")),
        }
    }

    /// Istio's node id, `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`.
    pub fn node_id(&self) -> &str {
        self.id.to_str().unwrap_or_default()
    }

    /// Adds the pair to a message leaving for another sidecar, replacing any the app sent.
    pub fn add(&self, headers: &mut HeaderMap) {
        headers.insert(METADATA, self.metadata.clone());
        headers.insert(ID, self.id.clone());
    }
}

/// Takes the peer's pair off a message; returns its metadata header, if any.
pub fn take(headers: &mut HeaderMap) -> Option<HeaderValue> {
    headers.remove(ID);
    headers.remove(METADATA)
}

/// Removes a pair that must not leave the mesh.
pub fn strip(headers: &mut HeaderMap) {
    take(headers);
}

/// Decodes a peer's metadata header; `None` for anything that is not Istio's encoding.
pub fn decode(value: &HeaderValue) -> Option<Peer> {
    if value.len() > MAX_METADATA {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .ok()?;
    let mut fields = Struct::decode(bytes.as_slice()).ok()?.fields;
    let mut string = |key: &str| match fields.remove(key)?.kind? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    };
    let workload = string("WORKLOAD_NAME").or_else(|| string("NAME"))?;
    let namespace = string("NAMESPACE")?;
    let cluster = string("CLUSTER_ID").unwrap_or_else(|| CLUSTER.into());
    let labels = match fields.remove("LABELS").and_then(|v| v.kind) {
        Some(Kind::StructValue(s)) => s
            .fields
            .into_iter()
            .filter_map(|(k, v)| match v.kind? {
                Kind::StringValue(v) => Some((k, v)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    Some(Peer {
        workload,
        namespace,
        cluster,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::parse_labels;

    fn productpage() -> Workload {
        Workload {
            name: "productpage-v1".into(),
            pod: "productpage-v1-0".into(),
            namespace: "default".into(),
            labels: parse_labels("app=productpage,version=v1").unwrap(),
            service_account: "bookinfo-productpage".into(),
            instance_ip: "10.44.0.7".into(),
        }
    }

    #[test]
    fn own_metadata_decodes_to_the_workload_with_istios_canonical_labels() {
        let mut headers = HeaderMap::new();
        OwnMetadata::new(&productpage()).add(&mut headers);
        assert_eq!(
            headers[ID],
            "sidecar~10.44.0.7~productpage-v1-0.default~default.svc.cluster.local"
        );
        let value = take(&mut headers).unwrap();
        assert!(headers.is_empty());
        let peer = decode(&value).unwrap();
        assert_eq!(peer.workload, "productpage-v1");
        assert_eq!(peer.namespace, "default");
        assert_eq!(peer.cluster, "Kubernetes");
        assert_eq!(peer.labels["app"], "productpage");
        assert_eq!(peer.labels[CANONICAL_NAME], "productpage");
        assert_eq!(peer.labels[CANONICAL_REVISION], "v1");
    }

    #[test]
    fn anything_but_istios_encoding_is_no_peer() {
        for bad in ["", "!!!", "aGVsbG8=", &"A".repeat(MAX_METADATA + 4)] {
            assert_eq!(decode(&HeaderValue::from_str(bad).unwrap()), None, "{bad}");
        }
        // A Struct without a namespace names no workload.
        let s = Struct {
            fields: BTreeMap::from([(
                "NAME".to_string(),
                Value {
                    kind: Some(Kind::StringValue("x".into())),
                },
            )]),
        };
        let v = base64::engine::general_purpose::STANDARD.encode(s.encode_to_vec());
        assert_eq!(decode(&HeaderValue::from_str(&v).unwrap()), None);
    }
}

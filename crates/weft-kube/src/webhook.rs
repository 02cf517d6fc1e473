//! The injection webhook, as istiod's on 15017 `/inject`: an AdmissionReview v1 for a pod in,
//! the same review answered with the pod's injection as a JSONPatch out. Which namespaces
//! are injected is the MutatingWebhookConfiguration's `namespaceSelector`
//! (`istio-injection=enabled`), decided by the API server before the pod reaches here.

use crate::inject::{inject, Options, Outcome};
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Istio's port for it.
pub const WEBHOOK_PORT: u16 = 15017;
/// The largest review read: a pod is far smaller, and the API server caps objects at 3 MiB.
const MAX_REVIEW: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview: {0}")]
    NotAReview(String),
}

/// Answers one AdmissionReview (its JSON body).
pub fn review(body: &[u8], opts: &Options) -> Result<Value, ReviewError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::NotAReview(e.to_string()))?;
    let request = &review["request"];
    let Some(uid) = request["uid"].as_str() else {
        return Err(ReviewError::NotAReview("no request.uid".into()));
    };
    let mut response = json!({"uid": uid, "allowed": true});
    let mut pod = request["object"].clone();
    if request["kind"]["kind"] == "Pod" && pod.is_object() {
        let namespace = request["namespace"]
            .as_str()
            .or(pod["metadata"]["namespace"].as_str())
            .unwrap_or("default")
            .to_string();
        let (workload, owner) = workload_of(&pod, &namespace);
        let before = pod.clone();
        if inject(&mut pod, &workload, owner.as_deref(), opts) == Outcome::Injected {
            let patch = patch(&before, &pod);
            response["patchType"] = "JSONPatch".into();
            response["patch"] = base64::engine::general_purpose::STANDARD
                .encode(patch.to_string())
                .into();
        }
    }
    Ok(json!({
        "apiVersion": review["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// The parts injection changes, each set whole: JSONPatch's `add` replaces a member that is
/// there and creates one that is not.
fn patch(before: &Value, after: &Value) -> Value {
    let ops: Vec<Value> = [
        "/metadata/labels",
        "/metadata/annotations",
        "/spec/initContainers",
        "/spec/volumes",
    ]
    .iter()
    .filter_map(|path| {
        let new = after.pointer(path)?;
        (before.pointer(path) != Some(new))
            .then(|| json!({"op": "add", "path": path, "value": new}))
    })
    .collect();
    Value::Array(ops)
}

/// The workload a pod belongs to and Istio's owner string: a ReplicaSet's pod is its
/// Deployment's (the ReplicaSet's name less the pod-template-hash), as Istio names it.
fn workload_of(pod: &Value, namespace: &str) -> (String, Option<String>) {
    let meta = &pod["metadata"];
    let owner = meta["ownerReferences"]
        .as_array()
        .and_then(|o| o.iter().find(|r| r["controller"] == true).or(o.first()));
    if let Some(owner) = owner {
        let (kind, name) = (
            owner["kind"].as_str().unwrap_or_default(),
            owner["name"].as_str().unwrap_or_default(),
        );
        let hash = meta["labels"]["pod-template-hash"].as_str();
        let deployment = (kind == "ReplicaSet")
            .then(|| hash.and_then(|h| name.strip_suffix(&format!("-{h}"))))
            .flatten();
        let (kind, name, group) = match (deployment, kind) {
            (Some(d), _) => ("Deployment", d, "apps/v1"),
            (None, "Job" | "CronJob") => (kind, name, "batch/v1"),
            (None, _) => (kind, name, "apps/v1"),
        };
        return (
            name.to_string(),
            Some(format!(
                "kubernetes://apis/{group}/namespaces/{namespace}/{}s/{name}",
                kind.to_lowercase()
            )),
        );
    }
    let name = meta["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            meta["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-').to_string())
        })
        .unwrap_or_default();
    (name, None)
}

/// The names the API server calls the webhook by (the Service `istiod` in istio-system).
pub const WEBHOOK_NAMES: [&str; 3] = [
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod",
];

/// The webhook's TLS: a certificate from the mesh's CA for [`WEBHOOK_NAMES`], which the API
/// server trusts by the mesh root (the webhook's caBundle). A year: it is made at every
/// start.
pub fn tls_config(ca: &weft_security::ca::Ca) -> Result<rustls::ServerConfig, TlsError> {
    use weft_security::termination::{server_config, Clients, Termination};
    let (chain, key) = ca
        .serving(
            &WEBHOOK_NAMES,
            std::time::Duration::from_secs(365 * 24 * 3600),
        )
        .map_err(|e| TlsError(e.to_string()))?;
    server_config(&Termination {
        chain_pem: &chain.concat(),
        key_pem: &key,
        clients: Clients::Anonymous,
        min_version: None,
        max_version: None,
        alpn: &[b"h2", b"http/1.1"],
    })
    .map_err(|e| TlsError(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("the webhook's certificate: {0}")]
pub struct TlsError(String);

/// Serves `POST /inject` over TLS until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, opts: Arc<Options>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, opts) = (acceptor.clone(), opts.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let opts = opts.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req, &opts).await) }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

async fn answer(req: Request<Incoming>, opts: &Options) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    if (req.method(), req.uri().path()) != (&Method::POST, "/inject") {
        return text(
            StatusCode::NOT_FOUND,
            "POST /inject with an AdmissionReview\n".into(),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    match review(&body, opts) {
        Ok(review) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(review.to_string())))
            .expect("valid response"),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests;

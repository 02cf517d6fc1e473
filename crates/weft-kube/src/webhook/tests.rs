//! The webhook as the API server calls it: reviews of pods as a ReplicaSet creates them,
//! answered with a patch that, applied, gives the pod `inject` gives it (over real HTTPS, in
//! weft's control_plane tests).

use super::*;

/// A pod as a Deployment's ReplicaSet submits it: no name yet, an owner, the template hash.
fn review_of(pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "object": pod,
        },
    })
}

fn details_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "details-v1-79f774bdb9-",
            "labels": {"app": "details", "version": "v1", "pod-template-hash": "79f774bdb9"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "details-v1-79f774bdb9", "controller": true, "uid": "x"}],
        },
        "spec": {
            "serviceAccountName": "bookinfo-details",
            "containers": [{"name": "details", "image": "docker.io/istio/examples-bookinfo-details-v1:1.20.3", "ports": [{"containerPort": 9080}]}],
        },
    })
}

/// The pod with the answer's patch applied, as the API server applies it.
fn apply(mut doc: Value, patch: &Value) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    doc
}

fn patch_of(answer: &Value) -> Option<Value> {
    let encoded = answer["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn a_deployments_pod_is_patched_into_what_inject_makes_of_it() {
    let opts = Options::default();
    let answer = review(review_of(details_pod()).to_string().as_bytes(), &opts).unwrap();
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"],
        "0df28fbd-5f5f-11e8-bc74-36e6bb280816"
    );
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patched = apply(details_pod(), &patch_of(&answer).unwrap());
    let mut expected = details_pod();
    let owner = "kubernetes://apis/apps/v1/namespaces/default/deployments/details-v1";
    assert_eq!(
        inject(&mut expected, "details-v1", Some(owner), &opts),
        Outcome::Injected
    );
    assert_eq!(patched, expected);
    // The Deployment's name, not the ReplicaSet's, names the workload.
    let proxy = &patched["spec"]["initContainers"][1];
    let args = proxy["args"].as_array().unwrap();
    let at = args.iter().position(|a| a == "--workload-name").unwrap();
    assert_eq!(args[at + 1], "details-v1");
}

#[test]
fn a_pod_left_alone_is_allowed_unpatched_and_garbage_is_refused() {
    let mut pod = details_pod();
    pod["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
    let answer = review(review_of(pod).to_string().as_bytes(), &Options::default()).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    for garbage in [&b"not json"[..], b"{}", b"{\"request\": {\"uid\": 7}}"] {
        assert!(review(garbage, &Options::default()).is_err());
    }
}

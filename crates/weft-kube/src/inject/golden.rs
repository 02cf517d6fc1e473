//! Istio's golden injected pods (`pkg/kube/inject/testdata`, read from
//! `../shared/istio-samples/kube/inject`) and the comparison of a pod Weft injected with
//! one: what Istio adds, Weft adds in the same places, with Weft's programs in the
//! containers. For injection's own tests and for the webhook's, over HTTPS, in weft's.

use super::{STATUS, VOLUMES};
use serde_json::{json, Value};

/// A file of Istio's samples, checked out at `../shared` beside the repository.
pub fn sample(name: &str) -> String {
    let path = format!(
        "{}/../../../shared/istio-samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{path}: {e} (istio-samples must be checked out at ../shared beside the repository)")
    })
}

pub fn first_document(text: &str) -> Value {
    let doc = serde_norway::Deserializer::from_str(text).next().unwrap();
    <Value as serde::Deserialize>::deserialize(doc).unwrap()
}

/// The pod template of Istio's `kube/inject/NAME` (`hello.yaml`, `hello.yaml.injected`).
pub fn template(name: &str) -> Value {
    first_document(&sample(&format!("kube/inject/{name}")))["spec"]["template"].clone()
}

/// A pod's (or a pod template's) container `name` from its `list`.
pub fn container<'v>(pod: &'v Value, list: &str, name: &str) -> &'v Value {
    pod["spec"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in {pod:#}"))
}

/// The app's containers as Istio prints them, less the `resources: {}` its Go types add.
pub fn apps(pod: &Value) -> Vec<Value> {
    let mut list = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in &mut list {
        if c["resources"] == json!({}) {
            c.as_object_mut().unwrap().remove("resources");
        }
    }
    list
}

/// Panics unless `ours`, a pod Weft injected, has the shape of `istios`, Istio's injection
/// of the same pod: its labels and annotations, the app's containers as they were, and
/// istio-init and istio-proxy with Istio's flags, privileges, probes, ports, environment
/// and volumes.
pub fn assert_istios_shape(ours: &Value, istios: &Value) {
    let (meta, istio_meta) = (&ours["metadata"], &istios["metadata"]);
    assert_eq!(meta["labels"], istio_meta["labels"]);
    for key in [
        "istio.io/rev",
        "kubectl.kubernetes.io/default-container",
        "kubectl.kubernetes.io/default-logs-container",
        "prometheus.io/path",
        "prometheus.io/port",
        "prometheus.io/scrape",
    ] {
        assert_eq!(
            meta["annotations"][key], istio_meta["annotations"][key],
            "{key}"
        );
    }
    let status: Value =
        serde_json::from_str(meta["annotations"][STATUS].as_str().unwrap()).unwrap();
    assert_eq!(
        status["initContainers"],
        json!(["istio-init", "istio-proxy"])
    );
    assert_eq!(apps(ours), apps(istios));

    let names = |v: &Value| -> Vec<Value> {
        v["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect()
    };
    assert_eq!(names(ours), names(istios));
    // istio-init: istio-iptables' flags after the program's name, its privileges.
    let (init, istio_init) = (
        container(ours, "initContainers", "istio-init"),
        container(istios, "initContainers", "istio-init"),
    );
    assert_eq!(init["args"][0], "iptables");
    assert_eq!(
        init["args"].as_array().unwrap()[1..],
        istio_init["args"].as_array().unwrap()[1..]
    );
    for key in ["securityContext", "resources"] {
        assert_eq!(init[key], istio_init[key], "istio-init {key}");
    }
    // istio-proxy: a native sidecar as uid 1337, probed on 15021, with the pod's identity.
    let (proxy, istio_proxy) = (
        container(ours, "initContainers", "istio-proxy"),
        container(istios, "initContainers", "istio-proxy"),
    );
    assert_eq!(proxy["args"][0], "proxy");
    for key in [
        "readinessProbe",
        "startupProbe",
        "restartPolicy",
        "securityContext",
        "resources",
    ] {
        assert_eq!(proxy[key], istio_proxy[key], "istio-proxy {key}");
    }
    let env = |c: &Value, name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no env {name}"))
    };
    for name in [
        "POD_NAME",
        "POD_NAMESPACE",
        "INSTANCE_IP",
        "SERVICE_ACCOUNT",
        "CA_ADDR",
        "TRUST_DOMAIN",
        "ISTIO_META_OWNER",
    ] {
        assert_eq!(env(proxy, name), env(istio_proxy, name), "env {name}");
    }
    let ports: Vec<&Value> = proxy["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["containerPort"])
        .collect();
    assert_eq!(ports, [&json!(15090), &json!(15020), &json!(15021)]);
    // The volumes the proxy reads are Istio's, under Istio's names.
    let volume = |v: &Value, name: &str| {
        v["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .cloned()
    };
    for name in VOLUMES {
        assert_eq!(volume(ours, name), volume(istios, name), "volume {name}");
    }
}

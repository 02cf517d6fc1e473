//! Injection against Istio's own golden pairs (`pkg/kube/inject/testdata`, in
//! `../shared/istio-samples/kube/inject`): what Istio adds, Weft adds in the same places,
//! with Weft's programs in the containers.

use super::*;

fn sample(name: &str) -> String {
    let path = format!(
        "{}/../../../shared/istio-samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{path}: {e} (istio-samples must be checked out at ../shared beside the repository)")
    })
}

fn first_document(text: &str) -> Value {
    let doc = serde_norway::Deserializer::from_str(text).next().unwrap();
    <Value as serde::Deserialize>::deserialize(doc).unwrap()
}

/// Istio's injected pair for `name`: what Weft makes of the input, and Istio's output.
fn pair(name: &str) -> (Value, Value, Outcome) {
    let mut ours = first_document(&sample(&format!("kube/inject/{name}.yaml")));
    let outcome = inject_document(&mut ours, &Options::default());
    let istios = first_document(&sample(&format!("kube/inject/{name}.yaml.injected")));
    (ours, istios, outcome)
}

fn container<'v>(pod: &'v Value, list: &str, name: &str) -> &'v Value {
    pod["spec"]["template"]["spec"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in {pod:#}"))
}

/// The app's containers as Istio prints them, less the `resources: {}` its Go types add.
fn apps(pod: &Value) -> Vec<Value> {
    let mut list = pod["spec"]["template"]["spec"]["containers"]
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

#[test]
fn a_deployment_gets_istios_injected_shape() {
    let (ours, istios, outcome) = pair("hello");
    assert_eq!(outcome, Outcome::Injected);
    let template = |v: &Value| v["spec"]["template"]["metadata"].clone();
    assert_eq!(template(&ours)["labels"], template(&istios)["labels"]);
    for key in [
        "istio.io/rev",
        "kubectl.kubernetes.io/default-container",
        "kubectl.kubernetes.io/default-logs-container",
        "prometheus.io/path",
        "prometheus.io/port",
        "prometheus.io/scrape",
    ] {
        assert_eq!(
            template(&ours)["annotations"][key],
            template(&istios)["annotations"][key],
            "{key}"
        );
    }
    let status: Value =
        serde_json::from_str(template(&ours)["annotations"][STATUS].as_str().unwrap()).unwrap();
    assert_eq!(
        status["initContainers"],
        json!(["istio-init", "istio-proxy"])
    );
    assert_eq!(apps(&ours), apps(&istios));

    let names = |v: &Value| -> Vec<Value> {
        v["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect()
    };
    assert_eq!(names(&ours), names(&istios));
    // istio-init: istio-iptables' flags after the program's name, its privileges.
    let (init, istio_init) = (
        container(&ours, "initContainers", "istio-init"),
        container(&istios, "initContainers", "istio-init"),
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
        container(&ours, "initContainers", "istio-proxy"),
        container(&istios, "initContainers", "istio-proxy"),
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
        v["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .cloned()
    };
    for name in VOLUMES {
        assert_eq!(volume(&ours, name), volume(&istios, name), "volume {name}");
    }
}

#[test]
fn a_label_the_pod_already_has_is_kept() {
    let (ours, istios, outcome) = pair("hello-mtls-not-ready");
    assert_eq!(outcome, Outcome::Injected);
    let labels = |v: &Value| v["spec"]["template"]["metadata"]["labels"].clone();
    assert_eq!(labels(&ours), labels(&istios));
    assert_eq!(labels(&ours)["security.istio.io/tlsMode"], "disabled");
}

#[test]
fn pods_that_opt_out_or_use_the_hosts_network_are_left_alone() {
    for name in ["hello-ignore", "hello-host-network"] {
        let (ours, _, outcome) = pair(name);
        assert!(
            matches!(outcome, Outcome::Skipped(_)),
            "{name}: {outcome:?}"
        );
        let input = first_document(&sample(&format!("kube/inject/{name}.yaml")));
        assert_eq!(ours, input, "{name} changed");
    }
}

#[test]
fn bookinfo_gets_a_sidecar_in_every_deployment_and_nothing_else_changes() {
    let text = sample("bookinfo/platform/bookinfo.yaml");
    let out = inject_yaml(&text, &Options::default()).unwrap();
    let docs = |t: &str| -> Vec<Value> {
        serde_norway::Deserializer::from_str(t)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    };
    let (before, after) = (docs(&text), docs(&out));
    assert_eq!(before.len(), after.len());
    let mut deployments = 0;
    for (b, a) in before.iter().zip(&after) {
        if a["kind"] == "Deployment" {
            deployments += 1;
            assert_eq!(
                container(a, "initContainers", "istio-init")["name"],
                "istio-init"
            );
            let proxy = container(a, "initContainers", "istio-proxy");
            let args = proxy["args"].as_array().unwrap();
            let workload = &args[args.iter().position(|x| x == "--workload-name").unwrap() + 1];
            assert_eq!(workload, &a["metadata"]["name"]);
            assert_eq!(apps(a), apps(b));
        } else {
            assert_eq!(a, b, "a {} changed", b["kind"]);
        }
    }
    assert_eq!(deployments, 6);
    // Injecting twice changes nothing more.
    assert_eq!(inject_yaml(&out, &Options::default()).unwrap(), out);
}

#[test]
fn traffic_annotations_reach_istio_inits_flags_and_app_metrics_are_merged() {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "annotations": {
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
            "traffic.sidecar.istio.io/excludeInboundPorts": "8081",
            "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
            "prometheus.io/scrape": "true", "prometheus.io/port": "9090",
        }},
        "spec": {"containers": [{"name": "web", "image": "web"}]},
    });
    assert_eq!(
        inject_document(&mut pod, &Options::default()),
        Outcome::Injected
    );
    let init = &pod["spec"]["initContainers"][0];
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(after("-x"), "10.96.0.1/32");
    assert_eq!(after("-d"), "15090,15021,15020,8081");
    assert_eq!(after("-o"), "5432");
    let proxy = &pod["spec"]["initContainers"][1];
    let proxy_args: Vec<&str> = proxy["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        proxy_args
            .windows(2)
            .any(|w| w == ["--app-metrics", "127.0.0.1:9090/metrics"]),
        "{proxy_args:?}"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        "15020"
    );
    // A Service or a ConfigMap has no pod to inject.
    let mut service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}});
    assert_eq!(
        inject_document(&mut service, &Options::default()),
        Outcome::NotAPod
    );
}

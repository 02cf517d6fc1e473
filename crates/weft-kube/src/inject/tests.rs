//! Injection against Istio's own golden pairs (`pkg/kube/inject/testdata`, in
//! `../shared/istio-samples/kube/inject`): what Istio adds, Weft adds in the same places,
//! with Weft's programs in the containers.

use super::golden::{apps, assert_istios_shape, container, first_document, sample, template};
use super::*;

/// Istio's injected pair for `name`: what Weft makes of the input, and Istio's output.
fn pair(name: &str) -> (Value, Value, Outcome) {
    let mut ours = first_document(&sample(&format!("kube/inject/{name}.yaml")));
    let outcome = inject_document(&mut ours, &Options::default());
    let istios = first_document(&sample(&format!("kube/inject/{name}.yaml.injected")));
    (ours, istios, outcome)
}

#[test]
fn a_deployment_gets_istios_injected_shape() {
    let (ours, istios, outcome) = pair("hello");
    assert_eq!(outcome, Outcome::Injected);
    assert_istios_shape(&ours["spec"]["template"], &istios["spec"]["template"]);
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
    let (before, after) = (documents(&text), documents(&out));
    assert_eq!(before.len(), after.len());
    let mut deployments = 0;
    for (b, a) in before.iter().zip(&after) {
        if a["kind"] == "Deployment" {
            deployments += 1;
            let pod = &a["spec"]["template"];
            assert_eq!(
                container(pod, "initContainers", "istio-init")["name"],
                "istio-init"
            );
            let proxy = container(pod, "initContainers", "istio-proxy");
            let args = proxy["args"].as_array().unwrap();
            let workload = &args[args.iter().position(|x| x == "--workload-name").unwrap() + 1];
            assert_eq!(workload, &a["metadata"]["name"]);
            assert_eq!(apps(pod), apps(&b["spec"]["template"]));
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

/// Documents of a YAML stream, as values.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `weft kube-inject` of one stream.
fn kube_inject(docs: &[Value]) -> Vec<Value> {
    let text = docs
        .iter()
        .map(|d| serde_norway::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    documents(&inject_yaml(&text, &Options::default()).unwrap())
}

#[test]
fn statefulsets_daemonsets_jobs_and_cronjobs_get_istios_shape_owned_by_themselves() {
    // Istio's hello template, in each kind that holds one.
    let hello = template("hello.yaml");
    let selector = json!({"matchLabels": hello["metadata"]["labels"]});
    let mut job_pod = hello.clone();
    job_pod["spec"]["restartPolicy"] = json!("Never");
    let workloads = [
        (
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "hello"},
                "spec": {"serviceName": "hello", "replicas": 3, "selector": selector, "template": hello}}),
            "/spec/template",
            "apps/v1/namespaces/default/statefulsets/hello",
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "hello"},
                "spec": {"selector": selector, "template": hello}}),
            "/spec/template",
            "apps/v1/namespaces/default/daemonsets/hello",
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "hello"},
                "spec": {"backoffLimit": 2, "template": job_pod}}),
            "/spec/template",
            "batch/v1/namespaces/default/jobs/hello",
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "hello"},
                "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": job_pod}}}}),
            "/spec/jobTemplate/spec/template",
            "batch/v1/namespaces/default/cronjobs/hello",
        ),
    ];
    let inputs: Vec<Value> = workloads.iter().map(|(w, _, _)| w.clone()).collect();
    let outputs = kube_inject(&inputs);
    assert_eq!(outputs.len(), inputs.len());
    for ((input, at, owner), output) in workloads.iter().zip(&outputs) {
        let kind = &input["kind"];
        // Istio's injection of the same template, as this kind's pods carry it.
        let mut istios = template("hello.yaml.injected");
        if input["kind"] == "Job" || input["kind"] == "CronJob" {
            istios["spec"]["restartPolicy"] = json!("Never");
        }
        let proxy = istios["spec"]["initContainers"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == "istio-proxy")
            .unwrap();
        for env in proxy["env"].as_array_mut().unwrap() {
            if env["name"] == "ISTIO_META_OWNER" {
                env["value"] = json!(format!("kubernetes://apis/{owner}"));
            }
        }
        let injected = output
            .pointer(at)
            .unwrap_or_else(|| panic!("a {kind} with no {at}"));
        assert_istios_shape(injected, &istios);
        // Everything but the template is as it was.
        let (mut rest, mut was) = (output.clone(), input.clone());
        *rest.pointer_mut(at).unwrap() = Value::Null;
        *was.pointer_mut(at).unwrap() = Value::Null;
        assert_eq!(rest, was, "a {kind} changed outside its template");
    }
}

#[test]
fn services_config_maps_and_pods_labelled_not_to_be_injected_pass_through_unchanged() {
    let opted_out = json!({"sidecar.istio.io/inject": "false", "app": "hello"});
    let mut deployment = first_document(&sample("kube/inject/hello.yaml"));
    deployment["spec"]["template"]["metadata"]["labels"] = opted_out.clone();
    let docs = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
            "spec": {"selector": {"app": "hello"}, "ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hello"},
            "data": {"greeting": "hello"}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello", "labels": opted_out},
            "spec": template("hello.yaml")["spec"]}),
        deployment,
    ];
    let outcomes: Vec<Outcome> = docs
        .iter()
        .map(|d| inject_document(&mut d.clone(), &Options::default()))
        .collect();
    let skipped = Outcome::Skipped("sidecar.istio.io/inject is \"false\"");
    assert_eq!(
        outcomes,
        [Outcome::NotAPod, Outcome::NotAPod, skipped.clone(), skipped]
    );
    assert_eq!(kube_inject(&docs), docs);
}

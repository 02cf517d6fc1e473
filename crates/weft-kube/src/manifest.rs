//! `weft manifest generate`, istioctl's: every object a cluster needs to run Weft, as
//! `istioctl install` would make them for the default profile: Istio's CRDs, the
//! `istio-system` Namespace, istiod's ServiceAccount and RBAC for exactly what it does,
//! its Deployment and Service, the injection webhook's configuration, and the addons
//! (Prometheus scraping merged metrics as Istio's addon does, the dashboard's Service).

use crate::cluster::index::{IstioKind, ISTIO_KINDS, MESH_CONFIG_MAP};
use crate::schema;
use serde_json::{json, Value};

pub const NAMESPACE: &str = "istio-system";
const ISTIOD: &str = "istiod";
/// What the webhook configuration is called, as Istio's default revision calls it.
pub const WEBHOOK_CONFIGURATION: &str = "istio-sidecar-injector";
/// The dashboard's port (Kiali's 20001).
pub const DASHBOARD_PORT: u16 = 20001;
const PROMETHEUS_IMAGE: &str = "prom/prometheus:v3.5.0";

/// What the manifest is made for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image whose entrypoint is `weft`, for istiod and the injected sidecars.
    pub image: String,
    /// The mesh root (PEM) when it is plugged in (Istio's `cacerts` Secret): the webhook's
    /// caBundle, which the API server trusts the webhook's certificate by.
    pub ca_bundle: Option<String>,
    /// The Prometheus addon and the dashboard's Service.
    pub addons: bool,
    /// Istio's plaintext `grpc-xds` port, 15010 (`weft control --grpc`): discovery without
    /// mTLS (a proxy there registers with the join token and gets no Secrets) and the admin
    /// API behind the admin token. Off unless asked for, as Weft's control plane has it.
    pub plaintext_xds: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            image: crate::inject::Options::default().image,
            ca_bundle: None,
            addons: true,
            plaintext_xds: false,
        }
    }
}

/// Every object, in the order they can be applied.
pub fn generate(opts: &Options) -> Vec<Value> {
    let mut all: Vec<Value> = ISTIO_KINDS.iter().map(crd).collect();
    all.extend([
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "disabled"}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": ISTIOD, "namespace": NAMESPACE, "labels": labels()}}),
        cluster_role(),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": ISTIOD, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ISTIOD},
            "subjects": [{"kind": "ServiceAccount", "name": ISTIOD, "namespace": NAMESPACE}]}),
    ]);
    all.extend(lease_role());
    all.extend([
        mesh_config(),
        deployment(opts),
        service(opts),
        webhook_configuration(opts),
    ]);
    if opts.addons {
        all.extend(prometheus());
        all.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "weft-dashboard", "namespace": NAMESPACE, "labels": labels()},
            "spec": {"selector": {"app": ISTIOD},
                "ports": [{"name": "http-dashboard", "port": DASHBOARD_PORT, "targetPort": DASHBOARD_PORT}]}}));
    }
    all
}

/// The documents as one YAML stream, as `kubectl apply -f` takes it.
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_norway::to_string(o).expect("JSON values are YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn labels() -> Value {
    json!({"app": ISTIOD, "istio": "pilot", "app.kubernetes.io/part-of": "weft"})
}

/// The versions Istio serves a kind at, the last one stored.
fn versions(kind: &IstioKind) -> &'static [&'static str] {
    match kind.group {
        "networking.istio.io" => &["v1alpha3", "v1beta1", "v1"],
        "security.istio.io" => &["v1beta1", "v1"],
        _ => &["v1alpha1", "v1"],
    }
}

fn short_names(kind: &IstioKind) -> &'static [&'static str] {
    match kind.kind {
        "VirtualService" => &["vs"],
        "DestinationRule" => &["dr"],
        "Gateway" => &["gw"],
        "ServiceEntry" => &["se"],
        "WorkloadEntry" => &["we"],
        "PeerAuthentication" => &["pa"],
        "AuthorizationPolicy" => &["ap"],
        "RequestAuthentication" => &["ra"],
        _ => &[],
    }
}

/// One of Istio's CRDs, under Istio's names, its `spec` typed as Weft's types read it (so
/// the API server refuses a field of the wrong type, and prunes or, under kubectl's strict
/// field validation, refuses one Istio does not have); Istio's rules beyond types stay
/// Weft's to check, the control plane rejecting a bad object with the field named while
/// the last good config keeps serving. `status` is open, as Istio's.
fn crd(kind: &IstioKind) -> Value {
    let category = kind.group.replace('.', "-");
    let spec = schema::spec(kind.kind).expect("every Istio kind Weft watches has its type");
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let versions: Vec<Value> = versions(kind)
        .iter()
        .map(|v| {
            json!({"name": v, "served": true, "storage": *v == "v1",
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object",
                    "properties": {"spec": spec.clone(), "status": open.clone()}}}})
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name(),
            "labels": {"app": "istio-pilot", "app.kubernetes.io/part-of": "weft"}},
        "spec": {
            "group": kind.group,
            "names": {"kind": kind.kind, "listKind": format!("{}List", kind.kind),
                "plural": kind.plural, "singular": kind.kind.to_lowercase(),
                "shortNames": short_names(kind), "categories": [category]},
            "scope": "Namespaced",
            "versions": versions,
        },
    })
}

/// What istiod reads and the one thing it writes (TokenReviews, to check tokens).
fn cluster_role() -> Value {
    let watch = json!(["get", "list", "watch"]);
    let istio_groups: Vec<&str> = {
        let mut g: Vec<&str> = ISTIO_KINDS.iter().map(|k| k.group).collect();
        g.dedup();
        g
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": ISTIOD, "labels": labels()},
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces", "services", "pods"], "verbs": watch},
            // The mesh config is read; the root goes into every namespace's
            // istio-ca-root-cert, by the lease holder.
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update"]},
            // What credentialName names, as istiod reads gateway credentials.
            {"apiGroups": [""], "resources": ["secrets"], "verbs": watch},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": watch},
            {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": watch},
            {"apiGroups": istio_groups, "resources": ["*"], "verbs": watch},
            // Istio's status writer: validationMessages on the objects Weft rejects.
            {"apiGroups": istio_groups, "resources": ["*/status"], "verbs": ["patch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                "resourceNames": [WEBHOOK_CONFIGURATION], "verbs": ["get", "update"]},
        ],
    })
}

/// The lease the replicas elect the writer by, in istio-system only.
fn lease_role() -> [Value; 2] {
    [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": ISTIOD, "namespace": NAMESPACE, "labels": labels()},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "create", "update"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": ISTIOD, "namespace": NAMESPACE, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ISTIOD},
            "subjects": [{"kind": "ServiceAccount", "name": ISTIOD, "namespace": NAMESPACE}]}),
    ]
}

/// The plaintext port's name and number, as Istio's istiod Service has them.
const PLAINTEXT_XDS: (&str, u16) = ("grpc-xds", 15010);

/// Istio's `istio` ConfigMap, with its default profile's mesh settings.
fn mesh_config() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": MESH_CONFIG_MAP, "namespace": NAMESPACE, "labels": labels()},
        "data": {"mesh": "accessLogFile: /dev/stdout\ndefaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\ntrustDomain: cluster.local\n"}})
}

fn deployment(opts: &Options) -> Value {
    let (xds_name, xds_port) = PLAINTEXT_XDS;
    let plaintext = format!("0.0.0.0:{xds_port}");
    let dashboard = format!("0.0.0.0:{DASHBOARD_PORT}");
    let mut args = vec!["control", "--kubernetes", "--config-dir", "/var/lib/weft"];
    if opts.plaintext_xds {
        args.extend(["--grpc", &plaintext]);
    }
    args.extend([
        "--grpc-tls",
        "0.0.0.0:15012",
        "--monitoring",
        "0.0.0.0:15014",
        "--webhook",
        "0.0.0.0:15017",
        "--inject-image",
        &opts.image,
        "--dashboard",
        &dashboard,
        "--ca-dir",
        "/etc/cacerts",
        "--ca-dir-optional",
    ]);
    let mut ports = vec![
        json!({"name": "https-dns", "containerPort": 15012, "protocol": "TCP"}),
        json!({"name": "http-monitoring", "containerPort": 15014, "protocol": "TCP"}),
        json!({"name": "https-webhook", "containerPort": 15017, "protocol": "TCP"}),
        json!({"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"}),
    ];
    if opts.plaintext_xds {
        ports.insert(
            0,
            json!({"name": xds_name, "containerPort": xds_port, "protocol": "TCP"}),
        );
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ISTIOD, "namespace": NAMESPACE, "labels": labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": ISTIOD, "istio": "pilot"}},
            "template": {
                "metadata": {"labels": labels(),
                    "annotations": {"sidecar.istio.io/inject": "false",
                        "prometheus.io/scrape": "true", "prometheus.io/port": "15014"}},
                "spec": {
                    "serviceAccountName": ISTIOD,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337, "fsGroup": 1337},
                    "containers": [{
                        "name": "discovery",
                        "image": opts.image,
                        "args": args,
                        // Where it publishes the admin credential for CLIs beside it; the
                        // root filesystem is read-only.
                        "env": [{"name": "WEFT_HOME", "value": "/var/lib/weft/home"},
                            // Who holds the writers' lease.
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": ports,
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 15014},
                            "initialDelaySeconds": 1, "periodSeconds": 3},
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [
                            {"name": "state", "mountPath": "/var/lib/weft"},
                            {"name": "cacerts", "mountPath": "/etc/cacerts", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "state", "emptyDir": {}},
                        // Istio's plugged-in CA: ca-cert.pem, ca-key.pem, root-cert.pem,
                        // cert-chain.pem. Without it the root is made at start.
                        {"name": "cacerts", "secret": {"secretName": "cacerts", "optional": true}},
                    ],
                },
            },
        },
    })
}

fn service(opts: &Options) -> Value {
    let mut ports = vec![
        json!({"name": "https-dns", "port": 15012, "targetPort": 15012, "protocol": "TCP"}),
        json!({"name": "https-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP"}),
        json!({"name": "http-monitoring", "port": 15014, "targetPort": 15014, "protocol": "TCP"}),
    ];
    if opts.plaintext_xds {
        let (name, port) = PLAINTEXT_XDS;
        ports.insert(
            0,
            json!({"name": name, "port": port, "targetPort": port, "protocol": "TCP"}),
        );
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ISTIOD, "namespace": NAMESPACE, "labels": labels()},
        "spec": {"selector": {"app": ISTIOD, "istio": "pilot"}, "ports": ports},
    })
}

/// Injection for pods of namespaces labelled `istio-injection=enabled`, but pods that say
/// `sidecar.istio.io/inject: "false"`; a pod is refused rather than created without its
/// sidecar when the webhook cannot answer (failurePolicy Fail).
fn webhook_configuration(opts: &Options) -> Value {
    use base64::Engine;
    let mut client = json!({"service": {"name": ISTIOD, "namespace": NAMESPACE,
        "path": "/inject", "port": 443}});
    if let Some(pem) = &opts.ca_bundle {
        client["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION, "labels": labels()},
        "webhooks": [{
            "name": "namespace.sidecar-injector.istio.io",
            "clientConfig": client,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods"]}],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "Never",
            "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
            "objectSelector": {"matchExpressions": [{"key": "sidecar.istio.io/inject",
                "operator": "NotIn", "values": ["false"]}]},
        }],
    })
}

/// Prometheus in `istio-system` scraping what Istio's addon scrapes: pods annotated
/// `prometheus.io/scrape` (injected sidecars, whose merged metrics are on 15020) and istiod.
fn prometheus() -> Vec<Value> {
    let config = "global:\n  scrape_interval: 15s\nscrape_configs:\n- job_name: kubernetes-pods\n  kubernetes_sd_configs:\n  - role: pod\n  relabel_configs:\n  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]\n    action: keep\n    regex: \"true\"\n  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]\n    action: replace\n    target_label: __metrics_path__\n    regex: (.+)\n  - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]\n    action: replace\n    regex: ([^:]+)(?::\\d+)?;(\\d+)\n    replacement: $1:$2\n    target_label: __address__\n  - action: labelmap\n    regex: __meta_kubernetes_pod_label_(.+)\n  - source_labels: [__meta_kubernetes_namespace]\n    target_label: namespace\n  - source_labels: [__meta_kubernetes_pod_name]\n    target_label: pod\n";
    let labels = json!({"app": "prometheus", "app.kubernetes.io/part-of": "weft"});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "prometheus", "namespace": NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "prometheus", "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "prometheus", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "prometheus"},
            "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": NAMESPACE}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "prometheus", "namespace": NAMESPACE, "labels": labels},
            "data": {"prometheus.yml": config}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "prometheus", "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "prometheus"}},
                "template": {"metadata": {"labels": labels,
                        "annotations": {"sidecar.istio.io/inject": "false"}},
                    "spec": {"serviceAccountName": "prometheus",
                        "containers": [{"name": "prometheus", "image": PROMETHEUS_IMAGE,
                            "args": ["--config.file=/etc/prometheus/prometheus.yml",
                                "--storage.tsdb.path=/prometheus", "--storage.tsdb.retention.time=6h"],
                            "ports": [{"name": "http", "containerPort": 9090}],
                            "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9090}},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus"},
                                {"name": "data", "mountPath": "/prometheus"}]}],
                        "volumes": [{"name": "config", "configMap": {"name": "prometheus"}},
                            {"name": "data", "emptyDir": {}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "prometheus", "namespace": NAMESPACE, "labels": labels},
            "spec": {"selector": {"app": "prometheus"},
                "ports": [{"name": "http", "port": 9090, "targetPort": 9090}]}}),
    ]
}

/// The chart value a boolean option is, and the sentinels [`mark_optional`] puts around
/// what only that option writes.
const PLAINTEXT_XDS_VALUE: &str = "plaintextXds";
const IF: &str = "weft-chart-if-";
const END: &str = "weft-chart-end-";

/// `on` with each array element that `off` lacks put between an `IF` and an `END` sentinel
/// element, which the chart makes `{{- if .Values.VALUE }}` and `{{- end }}`: both
/// settings' objects in one template. (Only arrays differ for the options there are; the
/// chart's render test would catch any other difference.)
fn mark_optional(on: &Value, off: &Value, value: &str) -> Value {
    match (on, off) {
        (Value::Object(on), Value::Object(off)) => Value::Object(
            on.iter()
                .map(|(key, v)| {
                    let marked = off
                        .get(key)
                        .map_or_else(|| v.clone(), |o| mark_optional(v, o, value));
                    (key.clone(), marked)
                })
                .collect(),
        ),
        (Value::Array(on), Value::Array(off)) if on.len() == off.len() => Value::Array(
            on.iter()
                .zip(off)
                .map(|(v, o)| mark_optional(v, o, value))
                .collect(),
        ),
        (Value::Array(on), Value::Array(off)) => {
            let (open, close) = (
                json!(format!("{IF}{value}")),
                json!(format!("{END}{value}")),
            );
            let mut off = off.iter().peekable();
            let mut out = Vec::new();
            // Whether the element before was added: a run of them is under one condition.
            let mut added = false;
            for item in on {
                let kept = off.next_if_eq(&item).is_some();
                if kept == added {
                    out.push(if kept { close.clone() } else { open.clone() });
                }
                added = !kept;
                out.push(item.clone());
            }
            if added {
                out.push(close);
            }
            Value::Array(out)
        }
        _ => on.clone(),
    }
}

/// `charts/weft`: the same objects as a Helm chart, written from [`generate`] so that the
/// two cannot drift. Values: `image`, `caBundle` (the plugged-in root's PEM), `addons`,
/// `plaintextXds`.
pub fn helm_chart() -> Vec<(&'static str, String)> {
    const IMAGE: &str = "weft-image-from-values";
    const BUNDLE: &str = "weft-ca-bundle-from-values";
    let opts = Options {
        image: IMAGE.into(),
        ca_bundle: Some(BUNDLE.into()),
        addons: true,
        plaintext_xds: true,
    };
    let without_plaintext = generate(&Options {
        plaintext_xds: false,
        ..opts.clone()
    });
    let all: Vec<Value> = generate(&opts)
        .iter()
        .zip(&without_plaintext)
        .map(|(on, off)| mark_optional(on, off, PLAINTEXT_XDS_VALUE))
        .collect();
    let core = generate(&Options {
        addons: false,
        ..opts.clone()
    })
    .len();
    let templated = |objects: &[Value]| {
        use base64::Engine;
        let bundle = base64::engine::general_purpose::STANDARD.encode(BUNDLE);
        let yaml = to_yaml(objects).replace(IMAGE, "{{ .Values.image | quote }}");
        yaml.lines()
            .map(|line| {
                let item = line.trim_start().strip_prefix("- ").unwrap_or_default();
                let pad = " ".repeat(line.len() - line.trim_start().len());
                if let Some(value) = item.strip_prefix(IF) {
                    format!("{pad}{{{{- if .Values.{value} }}}}")
                } else if item.starts_with(END) {
                    format!("{pad}{{{{- end }}}}")
                } else if line.trim_start() == format!("caBundle: {bundle}") {
                    format!("{pad}{{{{- with .Values.caBundle }}}}\n{pad}caBundle: {{{{ . | b64enc }}}}\n{pad}{{{{- end }}}}")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let version = env!("CARGO_PKG_VERSION");
    vec![
        (
            "Chart.yaml",
            format!("apiVersion: v2\nname: weft\ndescription: Weft, a service mesh that takes Istio's configuration, on Kubernetes (what weft manifest generate prints)\ntype: application\nversion: {version}\nappVersion: {version}\n"),
        ),
        (
            "values.yaml",
            format!("# The image whose entrypoint is weft, for istiod and the injected sidecars.\nimage: {}\n# The mesh root (PEM) of a plugged-in CA, also given to the cluster as the cacerts\n# Secret: the injection webhook's caBundle.\ncaBundle: \"\"\n# The Prometheus addon and the dashboard's Service.\naddons: true\n# istiod's plaintext discovery and admin port, Istio's grpc-xds 15010 (weft control --grpc):\n# no mTLS there, so off unless asked for (tests).\nplaintextXds: false\n", Options::default().image),
        ),
        (
            "README.md",
            "Written by `weft manifest chart --out charts/weft` from what `weft manifest generate`\nprints; edit `crates/weft-kube/src/manifest.rs`, not these files.\n".to_string(),
        ),
        ("templates/istiod.yaml", templated(&all[..core])),
        (
            "templates/addons.yaml",
            format!("{{{{- if .Values.addons }}}}\n{}{{{{- end }}}}\n", templated(&all[core..])),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(all: &'a [Value], kind: &str, name: &str) -> &'a Value {
        all.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    #[test]
    fn the_crds_name_every_istio_kind_weft_watches_as_istio_does() {
        let all = generate(&Options::default());
        for kind in ISTIO_KINDS {
            let crd = find(&all, "CustomResourceDefinition", &kind.crd_name());
            assert_eq!(crd["spec"]["names"]["kind"], kind.kind);
            let versions = crd["spec"]["versions"].as_array().unwrap();
            assert_eq!(versions.iter().filter(|v| v["storage"] == true).count(), 1);
            assert!(versions
                .iter()
                .any(|v| v["name"] == kind.version && v["served"] == true));
        }
        let vs = find(
            &all,
            "CustomResourceDefinition",
            "virtualservices.networking.istio.io",
        );
        assert_eq!(vs["spec"]["names"]["shortNames"], json!(["vs"]));
    }

    #[test]
    fn istiod_serves_the_ports_injected_pods_and_the_api_server_call() {
        let all = generate(&Options::default());
        let service = find(&all, "Service", "istiod");
        let ports: Vec<(u64, u64)> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["port"].as_u64().unwrap(),
                    p["targetPort"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ports, [(15012, 15012), (443, 15017), (15014, 15014)]);
        assert!(!to_yaml(&all).contains("15010"), "plaintext is opt-in");
        let plaintext = generate(&Options {
            plaintext_xds: true,
            ..Options::default()
        });
        let service = find(&plaintext, "Service", "istiod");
        assert_eq!(service["spec"]["ports"][0]["name"], "grpc-xds");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 15010);
        let container =
            &find(&plaintext, "Deployment", "istiod")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["ports"][0]["containerPort"], 15010);
        let args = container["args"].as_array().unwrap();
        assert!(args
            .windows(2)
            .any(|w| w == [json!("--grpc"), json!("0.0.0.0:15010")]));
        // Injected pods reach the CA where injection says it is.
        let injected = crate::inject::Options::default().control_plane;
        assert_eq!(injected, "istiod.istio-system.svc:15012");
        let webhook =
            &find(&all, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION)["webhooks"][0];
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(webhook["clientConfig"]["service"]["path"], "/inject");
        assert_eq!(
            webhook["namespaceSelector"]["matchLabels"]["istio-injection"],
            "enabled"
        );
        assert!(webhook["clientConfig"].get("caBundle").is_none());
        let plugged = generate(&Options {
            ca_bundle: Some("-----BEGIN CERTIFICATE-----\n".into()),
            ..Options::default()
        });
        let webhook = &find(
            &plugged,
            "MutatingWebhookConfiguration",
            WEBHOOK_CONFIGURATION,
        )["webhooks"][0];
        assert_eq!(
            webhook["clientConfig"]["caBundle"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
        );
    }

    #[test]
    fn rbac_grants_what_the_watches_the_token_review_and_the_writer_use_and_no_more() {
        let all = generate(&Options::default());
        let role = find(&all, "ClusterRole", "istiod");
        let rules = role["rules"].as_array().unwrap();
        let writes: Vec<(&Value, &Value)> = rules
            .iter()
            .filter(|r| {
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v != "get" && v != "list" && v != "watch")
            })
            .map(|r| (&r["resources"], &r["verbs"]))
            .collect();
        let (configmaps, status, tokenreviews, webhooks) = (
            json!(["configmaps"]),
            json!(["*/status"]),
            json!(["tokenreviews"]),
            json!(["mutatingwebhookconfigurations"]),
        );
        let (rw, patch, create, update) = (
            json!(["get", "list", "watch", "create", "update"]),
            json!(["patch"]),
            json!(["create"]),
            json!(["get", "update"]),
        );
        assert_eq!(
            writes,
            [
                (&configmaps, &rw),
                (&status, &patch),
                (&tokenreviews, &create),
                (&webhooks, &update)
            ]
        );
        let lease = find(&all, "Role", "istiod");
        assert_eq!(lease["metadata"]["namespace"], NAMESPACE);
        assert_eq!(lease["rules"][0]["resources"], json!(["leases"]));
        let groups: Vec<&Value> = rules
            .iter()
            .flat_map(|r| r["apiGroups"].as_array().unwrap())
            .collect();
        for g in [
            "",
            "discovery.k8s.io",
            "apiextensions.k8s.io",
            "networking.istio.io",
            "security.istio.io",
            "telemetry.istio.io",
        ] {
            assert!(groups.contains(&&json!(g)), "{g}");
        }
        assert!(!groups.contains(&&json!("*")));
    }

    #[test]
    fn the_committed_chart_is_what_the_generator_writes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/weft");
        for (path, content) in helm_chart() {
            let committed = std::fs::read_to_string(dir.join(path)).unwrap_or_default();
            assert!(
                committed == content,
                "charts/weft/{path} is not what the generator writes: run weft manifest chart --out charts/weft"
            );
        }
    }

    #[test]
    fn what_only_an_option_adds_is_marked_in_runs() {
        let on = json!({"a": [1, 2, 3, 4], "b": [{"c": [5, 6]}], "d": "e"});
        let off = json!({"a": [1, 4], "b": [{"c": [5]}], "d": "e"});
        let (open, close) = (json!(format!("{IF}v")), json!(format!("{END}v")));
        assert_eq!(
            mark_optional(&on, &off, "v"),
            json!({"a": [1, open, 2, 3, close, 4], "b": [{"c": [5, open, 6, close]}], "d": "e"})
        );
    }

    #[test]
    fn without_addons_it_is_istiod_alone() {
        let all = generate(&Options {
            addons: false,
            ..Options::default()
        });
        assert!(!all.iter().any(|o| o["metadata"]["name"] == "prometheus"));
        let yaml = to_yaml(&all);
        assert_eq!(weft_api::split_documents(&yaml).len(), all.len());
    }
}

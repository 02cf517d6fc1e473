//! Sidecar injection, as Istio's injector does it (`injection-template.yaml`, native-sidecar
//! form): a pod template gets an `istio-init` init container that writes the capture rules
//! (`weft iptables`, with istio-iptables' flags) and an `istio-proxy` native sidecar (an init
//! container with `restartPolicy: Always`, running `weft proxy` as uid 1337), the labels and
//! annotations Istio adds, and the volumes the proxy reads: its identity token, the mesh root
//! and the pod's labels. Pods on the host's network and pods that say
//! `sidecar.istio.io/inject: "false"` are left alone, as Istio's `injectRequired` leaves them.

use serde_json::{json, Map, Value};

/// Where an injected pod's proxy finds things, and what runs it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image whose entrypoint is `weft`.
    pub image: String,
    /// The control plane's TLS port, as Istio's `CA_ADDR`.
    pub control_plane: String,
    pub trust_domain: String,
    /// Istio's `istio.io/rev`.
    pub revision: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            image: format!("weft:{}", env!("CARGO_PKG_VERSION")),
            control_plane: "istiod.istio-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
            revision: "default".into(),
        }
    }
}

/// What injection did to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Why the pod is left as it is.
    Skipped(&'static str),
    /// Not a kind that holds a pod template.
    NotAPod,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {index}: {error}")]
    Yaml { index: usize, error: String },
}

const PROXY_UID: i64 = 1337;
/// Ports capture leaves alone inbound: Envoy's stats, the merged stats, health.
const EXCLUDED_INBOUND: &str = "15090,15021,15020";
const STATUS_PORT: u16 = 15020;
const HEALTH_PORT: u16 = 15021;
const INJECT: &str = "sidecar.istio.io/inject";
const STATUS: &str = "sidecar.istio.io/status";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const ROOT_DIR: &str = "/var/run/secrets/istio";
const PODINFO_DIR: &str = "/etc/istio/pod";

/// The volumes injection adds, in the order `sidecar.istio.io/status` lists them.
const VOLUMES: [&str; 3] = ["istio-podinfo", "istio-token", "istiod-ca-cert"];

/// `weft kube-inject`: every document of a YAML stream, pod templates injected and every other
/// kind as it came.
pub fn inject_yaml(text: &str, opts: &Options) -> Result<String, InjectError> {
    let mut out = Vec::new();
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let mut value =
            <Value as serde::Deserialize>::deserialize(doc).map_err(|e| InjectError::Yaml {
                index: index + 1,
                error: e.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
        inject_document(&mut value, opts);
        out.push(
            serde_norway::to_string(&value).map_err(|e| InjectError::Yaml {
                index: index + 1,
                error: e.to_string(),
            })?,
        );
    }
    Ok(out.join("---\n"))
}

/// Injects a document's pod template: a Pod's own, or a workload's `spec.template`
/// (`spec.jobTemplate.spec.template` for a CronJob).
pub fn inject_document(doc: &mut Value, opts: &Options) -> Outcome {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let template = match kind.as_str() {
        "Pod" => Some(&mut *doc),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => doc.get_mut("spec").and_then(|s| s.get_mut("template")),
        "CronJob" => doc.pointer_mut("/spec/jobTemplate/spec/template"),
        _ => None,
    };
    let Some(template) = template.filter(|t| t.is_object()) else {
        return Outcome::NotAPod;
    };
    let owner = (kind != "Pod").then(|| {
        let group = match kind.as_str() {
            "Job" | "CronJob" => "batch/v1",
            "ReplicationController" => "v1",
            _ => "apps/v1",
        };
        format!(
            "kubernetes://apis/{group}/namespaces/{namespace}/{}s/{name}",
            kind.to_lowercase()
        )
    });
    inject(template, &name, owner.as_deref(), opts)
}

fn object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("made an object")
}

/// Injects one pod (`metadata` and `spec`), named `workload` in telemetry.
pub fn inject(pod: &mut Value, workload: &str, owner: Option<&str>, opts: &Options) -> Outcome {
    let says = |key: &str| {
        pod["metadata"]["annotations"][key]
            .as_str()
            .or(pod["metadata"]["labels"][key].as_str())
            .map(str::to_string)
    };
    if says(INJECT).is_some_and(|v| v == "false") {
        return Outcome::Skipped("sidecar.istio.io/inject is \"false\"");
    }
    if pod["spec"]["hostNetwork"] == true {
        return Outcome::Skipped("the pod uses the host's network");
    }
    if pod["metadata"]["annotations"][STATUS].is_string() {
        return Outcome::Skipped("already injected");
    }
    let annotation = |key: &str| {
        pod["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_string)
    };
    let capture_args = capture_args(&annotation);
    let app_metrics = app_metrics(&annotation);
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();

    let metadata = object(object(pod).entry("metadata").or_insert(Value::Null));
    let labels = object(metadata.entry("labels").or_insert(Value::Null));
    let label = |labels: &Map<String, Value>, keys: &[&str]| {
        keys.iter()
            .find_map(|k| labels.get(*k).and_then(Value::as_str))
            .map(str::to_string)
    };
    let canonical_name = label(
        labels,
        &[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ],
    )
    .unwrap_or_else(|| workload.to_string());
    let canonical_revision = label(
        labels,
        &[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ],
    )
    .unwrap_or_else(|| "latest".into());
    labels
        .entry("security.istio.io/tlsMode")
        .or_insert("istio".into());
    labels.insert(
        "service.istio.io/canonical-name".into(),
        canonical_name.into(),
    );
    labels.insert(
        "service.istio.io/canonical-revision".into(),
        canonical_revision.into(),
    );
    let annotations = object(metadata.entry("annotations").or_insert(Value::Null));
    annotations.insert("istio.io/rev".into(), opts.revision.clone().into());
    if let Some(first) = containers.first() {
        annotations
            .entry("kubectl.kubernetes.io/default-container")
            .or_insert(first.clone().into());
        annotations
            .entry("kubectl.kubernetes.io/default-logs-container")
            .or_insert(first.clone().into());
    }
    // The sidecar's 15020 serves its metrics merged with the app's, as Istio's do.
    annotations.insert("prometheus.io/path".into(), "/stats/prometheus".into());
    annotations.insert("prometheus.io/port".into(), STATUS_PORT.to_string().into());
    annotations.insert("prometheus.io/scrape".into(), "true".into());
    annotations.insert(
        STATUS.into(),
        json!({
            "initContainers": ["istio-init", "istio-proxy"],
            "containers": null,
            "volumes": VOLUMES,
            "imagePullSecrets": null,
            "revision": opts.revision,
        })
        .to_string()
        .into(),
    );

    let spec = object(object(pod).entry("spec").or_insert(Value::Null));
    let init = spec
        .entry("initContainers")
        .or_insert(Value::Array(Vec::new()));
    if !init.is_array() {
        *init = Value::Array(Vec::new());
    }
    let init = init.as_array_mut().expect("made an array");
    let mut proxy_args = vec![
        "proxy".to_string(),
        "--control-plane".into(),
        format!("https://{}", opts.control_plane),
        "--credential-file".into(),
        format!("{TOKEN_DIR}/istio-token"),
        "--root-cert".into(),
        format!("{ROOT_DIR}/root-cert.pem"),
        "--labels-file".into(),
        format!("{PODINFO_DIR}/labels"),
        "--workload-name".into(),
        workload.to_string(),
    ];
    if let Some(at) = app_metrics {
        proxy_args.extend(["--app-metrics".into(), at]);
    }
    // Both first: the proxy is up before any other init container, which may need the mesh.
    init.splice(
        0..0,
        [
            istio_init(opts, capture_args),
            istio_proxy(opts, proxy_args, owner),
        ],
    );
    let volumes = spec.entry("volumes").or_insert(Value::Array(Vec::new()));
    if !volumes.is_array() {
        *volumes = Value::Array(Vec::new());
    }
    volumes.as_array_mut().expect("made an array").extend([
        json!({"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}}),
        json!({"name": "istio-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}},
        ]}}),
        json!({"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}),
    ]);
    Outcome::Injected
}

/// istio-iptables' flags from the pod's `traffic.sidecar.istio.io/*` annotations and
/// Istio's defaults.
fn capture_args(annotation: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let traffic = |key: &str| annotation(&format!("traffic.sidecar.istio.io/{key}"));
    let excluded_inbound = match traffic("excludeInboundPorts").filter(|p| !p.is_empty()) {
        Some(more) => format!("{EXCLUDED_INBOUND},{more}"),
        None => EXCLUDED_INBOUND.into(),
    };
    let mut args: Vec<String> = [
        "iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i",
    ]
    .map(String::from)
    .to_vec();
    args.push(traffic("includeOutboundIPRanges").unwrap_or_else(|| "*".into()));
    args.push("-x".into());
    args.push(traffic("excludeOutboundIPRanges").unwrap_or_default());
    args.push("-b".into());
    args.push(traffic("includeInboundPorts").unwrap_or_else(|| "*".into()));
    args.push("-d".into());
    args.push(excluded_inbound);
    if let Some(ports) = traffic("excludeOutboundPorts").filter(|p| !p.is_empty()) {
        args.extend(["-o".into(), ports]);
    }
    args.push("--log_output_level=default:info".into());
    args
}

/// Where the app's own metrics are, when its annotations ask Prometheus to scrape it: the
/// sidecar merges them into its 15020, as Istio's metrics merging does.
fn app_metrics(annotation: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if annotation("prometheus.io/scrape").as_deref() != Some("true") {
        return None;
    }
    let port = annotation("prometheus.io/port")?;
    let path = annotation("prometheus.io/path").unwrap_or_else(|| "/metrics".into());
    Some(format!("127.0.0.1:{port}{path}"))
}

fn resources() -> Value {
    json!({"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}})
}

fn istio_init(opts: &Options, args: Vec<String>) -> Value {
    json!({
        "name": "istio-init",
        "image": opts.image,
        "args": args,
        "resources": resources(),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": false,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "runAsUser": 0,
        },
    })
}

fn istio_proxy(opts: &Options, args: Vec<String>, owner: Option<&str>) -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("INSTANCE_IP", "status.podIP"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        json!({"name": "CA_ADDR", "value": opts.control_plane}),
        json!({"name": "TRUST_DOMAIN", "value": opts.trust_domain}),
    ];
    if let Some(owner) = owner {
        env.push(json!({"name": "ISTIO_META_OWNER", "value": owner}));
    }
    let probe = |period: u32, failures: u32| {
        json!({
            "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        })
    };
    json!({
        "name": "istio-proxy",
        "image": opts.image,
        "args": args,
        "env": env,
        "ports": [
            {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"},
            {"containerPort": STATUS_PORT, "name": "http-merged", "protocol": "TCP"},
            {"containerPort": HEALTH_PORT, "name": "http-health", "protocol": "TCP"},
        ],
        "readinessProbe": probe(15, 4),
        "startupProbe": probe(1, 600),
        // Draining starts when the pod's termination does, not only at the sidecar's
        // SIGTERM: inbound listeners close and readiness fails while the app finishes.
        "lifecycle": {"preStop": {"exec": {"command": ["weft", "drain"]}}},
        "resources": resources(),
        "restartPolicy": "Always",
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "runAsUser": PROXY_UID,
        },
        "volumeMounts": [
            {"mountPath": ROOT_DIR, "name": "istiod-ca-cert"},
            {"mountPath": TOKEN_DIR, "name": "istio-token"},
            {"mountPath": PODINFO_DIR, "name": "istio-podinfo"},
        ],
    })
}

#[cfg(any(test, feature = "golden"))]
pub mod golden;
#[cfg(test)]
mod tests;

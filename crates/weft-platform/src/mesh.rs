//! The mesh file: Kubernetes `v1 Service`s and Istio config exactly as on Kubernetes, plus
//! `Workload`s (`weft.dev/v1alpha1`), the one Weft kind, which stands for a Deployment and
//! its pod template: what to run, how many, with which labels.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use weft_api::{split_documents, Diagnostic, Resource};

pub const API_VERSION: &str = "weft.dev/v1alpha1";
pub const KIND: &str = "Workload";

/// A Workload: a Deployment's worth of identical pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub spec: WorkloadSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// The pods' labels; `app` and `version` name the workload in telemetry, as in Istio.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    #[serde(default = "one")]
    pub replicas: u32,
    /// The program and its arguments, run inside the pod. Not needed for a gateway.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Ports the app listens on (documentation, and the proxy's inbound targets).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The pods' annotations. `prometheus.io/scrape: "true"` with `prometheus.io/port` (and
    /// `prometheus.io/path`, default `/metrics`) merges the app's metrics into the sidecar's
    /// 15020, as Istio's metrics merging does.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Makes the pod an ingress gateway: it runs `weft proxy --gateway` instead of an app,
    /// and these ports of the host's 127.0.0.1 reach it.
    #[serde(default)]
    pub gateway: Option<GatewaySpec>,
    /// `false` leaves the pod out of the mesh, as a pod of a namespace without injection or
    /// a host on the internet: its app runs alone, with no sidecar and no capture rules.
    /// Ready once every port in `ports` accepts connections (the kubelet's tcpSocket probe).
    /// While ready, a labelled one is an endpoint of the Services that select it, which mesh
    /// clients call in plaintext; one without labels is reached as Istio pods reach an
    /// external host: declared by a ServiceEntry (under the default REGISTRY_ONLY), or
    /// under ALLOW_ANY.
    #[serde(default = "yes")]
    pub sidecar: bool,
    /// Names every pod resolves to this workload's pods, as public DNS names a host on the
    /// internet (`api.external.test`). Only with `sidecar: false`; a name belongs to one
    /// workload. With several replicas a name resolves to all of their addresses, as a name
    /// with several A records.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// With `hostnames`: a certificate for them from the platform's public CA, its stand-in
    /// for the internet's CAs, which every pod trusts; the app finds it at `$TLS_CERT_FILE`
    /// and `$TLS_KEY_FILE`.
    #[serde(default)]
    pub public_certificate: bool,
    /// Secrets of the workload's namespace mounted as optional secret volumes: each key of
    /// Secret NAME is the file `$(SECRETS_DIR)/NAME/KEY`, written once the Secret exists and
    /// again whenever it changes, as the kubelet keeps such a volume. The pod starts without
    /// waiting for them.
    #[serde(default)]
    pub secret_volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    pub host_ports: Vec<u16>,
}

fn default_service_account() -> String {
    "default".into()
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    metadata: Metadata,
    spec: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// Everything a mesh file declares.
#[derive(Debug, Default)]
pub struct MeshFile {
    pub workloads: Vec<Workload>,
    /// Services and Istio config, as `weft apply` reads them.
    pub resources: Vec<Resource>,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// One thing wrong in a mesh file, placed as the config loader places its diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    pub document: usize,
    pub line: usize,
    pub what: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} (line {}): {}",
            self.file.display(),
            self.document,
            self.line,
            self.what
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

pub fn load(path: &Path) -> Result<MeshFile, MeshError> {
    let text = std::fs::read_to_string(path).map_err(|source| MeshError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, file: &Path) -> Result<MeshFile, MeshError> {
    let mut mesh = MeshFile::default();
    let mut problems = Vec::new();
    let mut workload_documents = Vec::new();
    for (index, (line, doc)) in split_documents(text).into_iter().enumerate() {
        let document = index + 1;
        let problem = |what: String, hint: Option<&str>| Problem {
            file: file.to_path_buf(),
            document,
            line,
            what,
            hint: hint.map(str::to_string),
        };
        let Ok(value) = serde_norway::from_str::<serde_json::Value>(doc) else {
            continue; // the config loader reports it
        };
        if value["kind"] != KIND {
            continue;
        }
        workload_documents.push(document);
        if value["apiVersion"] != API_VERSION {
            problems.push(problem(
                format!(
                    "a Workload's apiVersion is {API_VERSION}, not {}",
                    value["apiVersion"]
                ),
                None,
            ));
            continue;
        }
        match workload(value) {
            Ok(w) => mesh.workloads.push(w),
            Err(what) => problems.push(problem(
                what,
                Some("see docs/mesh-file.md for the Workload fields"),
            )),
        }
    }
    let loaded = weft_api::load_str(text, file);
    for d in loaded.diagnostics {
        if workload_documents.contains(&d.origin.document) {
            continue; // the config loader does not know Workloads and says so
        }
        if d.severity == weft_api::Severity::Error {
            problems.push(Problem {
                file: file.to_path_buf(),
                document: d.origin.document,
                line: d.origin.line,
                what: d.to_string(),
                hint: None,
            });
        } else {
            mesh.warnings.push(d);
        }
    }
    mesh.resources = loaded.resources;
    check_names(&mesh.workloads, file, &mut problems);
    if problems.is_empty() {
        Ok(mesh)
    } else {
        Err(MeshError::Invalid(problems))
    }
}

impl WorkloadSpec {
    /// Where the app serves its metrics (`127.0.0.1:9080/metrics`), when its annotations
    /// ask Prometheus to scrape it.
    pub fn app_metrics(&self) -> Result<Option<String>, String> {
        if self
            .annotations
            .get("prometheus.io/scrape")
            .map(String::as_str)
            != Some("true")
        {
            return Ok(None);
        }
        let port = match self.annotations.get("prometheus.io/port") {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("prometheus.io/port {p:?} is not a port number"))?,
            None => *self
                .ports
                .first()
                .ok_or("prometheus.io/scrape needs prometheus.io/port, or a port in spec.ports")?,
        };
        let path = self
            .annotations
            .get("prometheus.io/path")
            .map_or("/metrics", String::as_str);
        if !path.starts_with('/') {
            return Err(format!("prometheus.io/path {path:?} must start with /"));
        }
        Ok(Some(format!("127.0.0.1:{port}{path}")))
    }
}

fn workload(value: serde_json::Value) -> Result<Workload, String> {
    let doc: Document = serde_path_to_error::deserialize(value)
        .map_err(|e| format!("Workload: {}: {}", e.path(), e.inner()))?;
    let name = doc.metadata.name;
    let namespace = doc.metadata.namespace.unwrap_or_else(|| "default".into());
    let spec: WorkloadSpec = serde_path_to_error::deserialize(doc.spec).map_err(|e| {
        format!(
            "Workload {namespace}/{name}: spec.{}: {}",
            e.path(),
            e.inner()
        )
    })?;
    let at = |field: &str, what: &str| format!("Workload {namespace}/{name}: spec.{field}: {what}");
    if spec.command.is_empty() && spec.gateway.is_none() {
        return Err(at("command", "a Workload runs a command, or is a gateway"));
    }
    if !spec.sidecar && spec.gateway.is_some() {
        return Err(at(
            "sidecar",
            "a gateway is a proxy and cannot go without one: drop `sidecar: false`",
        ));
    }
    // Labels name a pod to the mesh; a pod outside it needs none.
    if spec.sidecar && !spec.labels.contains_key("app") {
        return Err(at(
            "labels",
            "needs an `app` label: services select pods by it and telemetry names them by it",
        ));
    }
    if spec.sidecar && !spec.hostnames.is_empty() {
        return Err(at(
            "hostnames",
            "names hosts outside the mesh: give the workload `sidecar: false`, or name a mesh workload with a Service",
        ));
    }
    if let Some(bad) = spec.hostnames.iter().find(|h| !external_name(h)) {
        return Err(at(
            "hostnames",
            &format!("{bad:?} is not a lower-case DNS name outside cluster.local (say api.external.test)"),
        ));
    }
    if spec.public_certificate && spec.hostnames.is_empty() {
        return Err(at(
            "publicCertificate",
            "certifies the workload's hostnames, and it has none: add `hostnames`",
        ));
    }
    if spec.replicas == 0 {
        return Err(at("replicas", "must be at least 1"));
    }
    if let Some(bad) = spec
        .secret_volumes
        .iter()
        .find(|n| !weft_api::validate::is_dns1123_subdomain(n))
    {
        return Err(at(
            "secretVolumes",
            &format!("{bad:?} is not a Secret's name (a lower-case DNS subdomain, say my-certs)"),
        ));
    }
    spec.app_metrics().map_err(|e| at("annotations", &e))?;
    Ok(Workload {
        name,
        namespace,
        spec,
    })
}

/// A DNS name with at least two labels (a single label would shadow a Service's short name),
/// outside the cluster domain, whose names belong to Services.
fn external_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(label)
        && name != "cluster.local"
        && !name.ends_with(".cluster.local")
}

/// Names become pod names, hostnames and interface names: DNS labels, and unique. A hostname
/// names one workload, as a DNS name is one host's.
fn check_names(workloads: &[Workload], file: &Path, problems: &mut Vec<Problem>) {
    let mut seen = std::collections::BTreeSet::new();
    let mut hostnames = BTreeMap::new();
    for w in workloads {
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 40
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        let problem = |what: String| Problem {
            file: file.to_path_buf(),
            document: 0,
            line: 0,
            what,
            hint: None,
        };
        if !dns_label(&w.name) || !dns_label(&w.namespace) {
            problems.push(problem(format!(
                "Workload {}/{}: names must be lower-case DNS labels of at most 40 characters",
                w.namespace, w.name
            )));
        }
        if !seen.insert((w.namespace.clone(), w.name.clone())) {
            problems.push(problem(format!(
                "Workload {}/{} is declared twice",
                w.namespace, w.name
            )));
        }
        for h in &w.spec.hostnames {
            let owner = (&w.namespace, &w.name);
            if let Some(first) = hostnames.insert(h.as_str(), owner).filter(|f| *f != owner) {
                problems.push(problem(format!(
                    "Workload {}/{}: hostname {h} is already Workload {}/{}'s",
                    w.namespace, w.name, first.0, first.1
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec:
  labels: {app: reviews, version: v1}
  serviceAccount: bookinfo-reviews
  replicas: 2
  command: [weft, bookinfo, reviews, --version, v1]
  env: {LOG: info}
  ports: [9080]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: ingressgateway, namespace: istio-system}
spec:
  labels: {app: istio-ingressgateway, istio: ingressgateway}
  gateway: {hostPorts: [8080]}
"#;

    #[test]
    fn a_mesh_file_holds_workloads_and_config() {
        let mesh = parse(MESH, Path::new("mesh.yaml")).unwrap();
        assert_eq!(mesh.resources.len(), 1);
        assert!(mesh.warnings.is_empty(), "{:?}", mesh.warnings);
        let reviews = &mesh.workloads[0];
        assert_eq!(
            (reviews.namespace.as_str(), reviews.spec.replicas),
            ("default", 2)
        );
        assert_eq!(reviews.spec.service_account, "bookinfo-reviews");
        assert_eq!(
            mesh.workloads[1].spec.gateway.as_ref().unwrap().host_ports,
            [8080]
        );
    }

    #[test]
    fn mistakes_name_the_document_and_field() {
        let bad = MESH.replace("replicas: 2", "replica: 2");
        let err = parse(&bad, Path::new("mesh.yaml")).unwrap_err().to_string();
        assert!(
            err.starts_with("mesh.yaml: document 2 (line 9): Workload default/reviews-v1: spec.replica: unknown field `replica`"),
            "{err}"
        );
        let bad = MESH.replace(
            "labels: {app: reviews, version: v1}",
            "labels: {version: v1}",
        );
        let err = parse(&bad, Path::new("mesh.yaml")).unwrap_err().to_string();
        assert!(err.contains("spec.labels: needs an `app` label"), "{err}");
        let bad = MESH.replace(
            "ports: [{name: http, port: 9080}]",
            "ports: [{name: http, port: 99999}]",
        );
        let err = parse(&bad, Path::new("mesh.yaml")).unwrap_err().to_string();
        assert!(
            err.contains("document 1") && err.contains("Service default/reviews"),
            "{err}"
        );
    }

    const EXTERNAL: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: api, namespace: external}
spec:
  sidecar: false
  hostnames: [api.external.test]
  command: [weft, echo, --name, api]
  ports: [8080]
"#;

    #[test]
    fn a_workload_outside_the_mesh_has_hostnames_and_needs_no_labels() {
        let mesh = parse(EXTERNAL, Path::new("mesh.yaml")).unwrap();
        let api = &mesh.workloads[0].spec;
        assert!(!api.sidecar);
        assert_eq!(api.hostnames, ["api.external.test"]);
        let mesh = parse(MESH, Path::new("mesh.yaml")).unwrap();
        assert!(mesh.workloads.iter().all(|w| w.spec.sidecar));
    }

    #[test]
    fn a_public_certificate_is_for_hostnames() {
        let with = EXTERNAL.replace(
            "  ports: [8080]",
            "  ports: [8080]\n  publicCertificate: true",
        );
        let mesh = parse(&with, Path::new("mesh.yaml")).unwrap();
        assert!(mesh.workloads[0].spec.public_certificate);
        let without = with.replace("  hostnames: [api.external.test]\n", "");
        let err = parse(&without, Path::new("mesh.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.publicCertificate: certifies the workload's hostnames"),
            "{err}"
        );
    }

    #[test]
    fn secret_volumes_name_secrets() {
        let with = |names: &str| {
            EXTERNAL.replace(
                "  ports: [8080]",
                &format!("  ports: [8080]\n  secretVolumes: {names}"),
            )
        };
        let mesh = parse(&with("[server-certs, ca.certs]"), Path::new("mesh.yaml")).unwrap();
        assert_eq!(
            mesh.workloads[0].spec.secret_volumes,
            ["server-certs", "ca.certs"]
        );
        for bad in ["[../etc]", "[Certs]", "[\"a/b\"]"] {
            let err = parse(&with(bad), Path::new("mesh.yaml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("spec.secretVolumes: ") && err.contains("is not a Secret's name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn hostnames_are_external_dns_names_of_one_workload_outside_the_mesh() {
        let err = |text: &str| parse(text, Path::new("mesh.yaml")).unwrap_err().to_string();
        let meshed = EXTERNAL.replace("sidecar: false", "labels: {app: api}");
        assert!(
            err(&meshed).contains("spec.hostnames: names hosts outside the mesh"),
            "{}",
            err(&meshed)
        );
        for bad in ["api", "API.external.test", "api.default.svc.cluster.local"] {
            let text = EXTERNAL.replace("api.external.test", bad);
            assert!(
                err(&text).contains(&format!("spec.hostnames: {bad:?} is not")),
                "{}",
                err(&text)
            );
        }
        let twice = format!(
            "{EXTERNAL}---{}",
            EXTERNAL.replace("name: api,", "name: api2,")
        );
        assert!(
            err(&twice).contains(
                "Workload external/api2: hostname api.external.test is already Workload external/api's"
            ),
            "{}",
            err(&twice)
        );
        let gateway = MESH.replace(
            "gateway: {hostPorts",
            "sidecar: false\n  gateway: {hostPorts",
        );
        assert!(
            err(&gateway).contains("spec.sidecar: a gateway is a proxy"),
            "{}",
            err(&gateway)
        );
    }

    fn annotated(annotations: &str) -> Result<MeshFile, MeshError> {
        let text = format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {{name: reviews}}\nspec:\n  labels: {{app: reviews}}\n  command: [weft, echo]\n  ports: [9080]\n  annotations: {annotations}\n"
        );
        parse(&text, Path::new("mesh.yaml"))
    }

    #[test]
    fn prometheus_annotations_name_the_apps_metrics() {
        let at = |a: &str| {
            annotated(a).unwrap().workloads[0]
                .spec
                .app_metrics()
                .unwrap()
        };
        assert_eq!(at("{}"), None);
        assert_eq!(
            at("{prometheus.io/scrape: \"true\"}").as_deref(),
            Some("127.0.0.1:9080/metrics")
        );
        assert_eq!(
            at("{prometheus.io/scrape: \"true\", prometheus.io/port: \"9100\", prometheus.io/path: /stats}")
                .as_deref(),
            Some("127.0.0.1:9100/stats")
        );
        let bad = annotated("{prometheus.io/scrape: \"true\", prometheus.io/port: http}");
        let Err(e) = bad else { panic!("accepted") };
        let e = e.to_string();
        assert!(
            e.contains("spec.annotations") && e.contains("not a port number"),
            "{e}"
        );
    }
}

//! `weft manifest generate` as a cluster would take it: every object passes Kubernetes
//! 1.33's schemas, strictly (PyPI's kubernetes-validate), and the Helm chart in
//! `charts/weft`, rendered by Helm itself (helm-python-sdk bundles Helm's SDK), is the same
//! objects, with and without values set; Istio's valid samples pass the CRDs' `spec`
//! schemas and wrongly typed specs do not (jsonschema, `.ci/crd_validate.py`). `.ci/run`
//! installs all three into `.ci/venv` from `.ci/requirements.txt`.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv_bin(name: &str) -> PathBuf {
    let bin = repo().join(".ci/venv/bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: bash .ci/run installs .ci/requirements.txt into .ci/venv",
        bin.display()
    );
    bin
}

async fn generate(args: &[&str]) -> String {
    let mut all = vec!["manifest".to_string(), "generate".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    let (status, out, err) = run_weft(&all).await;
    assert!(status.success(), "weft manifest generate: {err}");
    out
}

/// The documents of a YAML stream as JSON, in a stable order.
fn objects(yaml: &str) -> Vec<String> {
    let mut all: Vec<String> = weft_api::split_documents(yaml)
        .into_iter()
        .filter_map(|(_, doc)| serde_norway::from_str::<Value>(doc).ok())
        .filter(|v| !v.is_null())
        .map(|v| v.to_string())
        .collect();
    all.sort();
    all
}

fn render(values: Option<&str>) -> String {
    let mut c = std::process::Command::new(venv_bin("python"));
    c.arg(repo().join(".ci/helm_render.py"))
        .arg(repo().join("charts/weft"));
    if let Some(v) = values {
        c.arg(v);
    }
    let out = c.output().expect("Helm's SDK renders the chart");
    assert!(
        out.status.success(),
        "rendering charts/weft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_manifest_passes_kubernetes_schemas_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weft.yaml");
    let manifest = generate(&[]).await;
    std::fs::write(&file, &manifest).unwrap();
    let out = std::process::Command::new(venv_bin("kubernetes-validate"))
        .args(["--kubernetes-version", "1.33.0", "--strict"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate runs");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    let passed = report
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(passed, objects(&manifest).len(), "{report}");
    for kind in [
        "customresourcedefinition/virtualservices.networking.istio.io",
        "clusterrole/istiod",
        "deployment/istiod",
        "service/istiod",
        "mutatingwebhookconfiguration/istio-sidecar-injector",
        "deployment/prometheus",
        "service/weft-dashboard",
    ] {
        assert!(
            report.contains(&format!("resource {kind} against version 1.33")),
            "{kind}: {report}"
        );
    }
}

#[tokio::test]
async fn the_helm_chart_renders_the_same_objects() {
    assert_eq!(objects(&render(None)), objects(&generate(&[]).await));

    let ca = tempfile::tempdir().unwrap();
    let root = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    std::fs::write(ca.path().join("root-cert.pem"), root).unwrap();
    let values = serde_json::json!({"image": "registry.example/weft:1.2.3", "caBundle": root, "addons": false});
    let expected = generate(&[
        "--image",
        "registry.example/weft:1.2.3",
        "--ca-dir",
        &ca.path().display().to_string(),
        "--without-addons",
    ])
    .await;
    assert!(expected.contains("caBundle: "), "{expected}");
    assert_eq!(
        objects(&render(Some(&values.to_string()))),
        objects(&expected)
    );
}

/// Istio's samples, beside the checkout (never copied into this repository).
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio-samples");

/// The documents of `files` as kubectl reads them, each named by file and place.
fn documents(files: &[PathBuf]) -> Vec<(String, Value)> {
    files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            let docs: Vec<(String, Value)> = weft_api::split_documents(&text)
                .into_iter()
                .enumerate()
                .map(|(i, (_, doc))| {
                    let at = format!("{}: document {}", file.display(), i + 1);
                    let value =
                        weft_api::parse_document(doc).unwrap_or_else(|e| panic!("{at}: {e}"));
                    (at, value)
                })
                .collect();
            docs
        })
        .collect()
}

/// Each of `objects` of a kind the manifest has a CRD for, with what its `spec` breaks of
/// the CRD's schema (`.ci/crd_validate.py`).
fn spec_errors(manifest: &str, objects: &[(String, Value)]) -> Vec<(String, Vec<String>)> {
    let crds: Vec<Value> = weft_api::split_documents(manifest)
        .into_iter()
        .map(|(_, doc)| serde_norway::from_str::<Value>(doc).unwrap())
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    let objects: Vec<Value> = objects
        .iter()
        .map(|(at, object)| serde_json::json!({"at": at, "object": object}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("given.json");
    std::fs::write(
        &file,
        serde_json::json!({"crds": crds, "objects": objects}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(venv_bin("python"))
        .arg(repo().join(".ci/crd_validate.py"))
        .arg(&file)
        .output()
        .expect("jsonschema runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let report: Value = serde_json::from_str(line).unwrap();
            let at = format!(
                "{} {}",
                report["kind"].as_str().unwrap(),
                report["at"].as_str().unwrap()
            );
            let errors = report["errors"].as_array().unwrap();
            (
                at,
                errors.iter().map(|e| e.as_str().unwrap().into()).collect(),
            )
        })
        .collect()
}

fn samples(dir: &str, only: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let dir = Path::new(SAMPLES).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (istio-samples belongs at ../shared)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&only))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn istios_valid_samples_pass_the_crds_schemas_and_wrong_types_do_not() {
    let manifest = generate(&[]).await;
    let mut files = samples("bookinfo/networking", |n| n.ends_with(".yaml"));
    files.extend(samples("validation", |n| n.ends_with("-valid.yaml")));
    files.extend(samples("security", |n| n.ends_with(".yaml")));
    let checked = spec_errors(&manifest, &documents(&files));
    let failed: Vec<String> = checked
        .iter()
        .filter(|(_, errors)| !errors.is_empty())
        .map(|(at, errors)| format!("{at}: {errors:?}"))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    for kind in [
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "WorkloadEntry",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "RequestAuthentication",
        "Telemetry",
    ] {
        assert!(
            checked
                .iter()
                .any(|(at, _)| at.starts_with(&format!("{kind} "))),
            "no {kind} among the samples"
        );
    }
    assert!(checked.len() >= 60, "only {} documents", checked.len());

    // What the API server must refuse: a wrong type, an enum value Istio does not have, a
    // field Istio does not have.
    let bad = [
        ("VirtualService", "hosts: 5", "spec/hosts"),
        (
            "VirtualService",
            "http: [{timeout: {}}]",
            "spec/http/0/timeout",
        ),
        ("VirtualService", "htp: []", "'htp' was unexpected"),
        (
            "DestinationRule",
            "{host: r, trafficPolicy: {loadBalancer: {simple: FASTEST}}}",
            "spec/trafficPolicy/loadBalancer/simple",
        ),
        (
            "Gateway",
            "servers: [{port: {number: eighty}, hosts: ['*']}]",
            "spec/servers/0/port/number",
        ),
        ("Sidecar", "egress: {hosts: ['./*']}", "spec/egress"),
        ("PeerAuthentication", "mtls: {mode: 1}", "spec/mtls/mode"),
        (
            "AuthorizationPolicy",
            "rules: [{to: [{operation: {paths: /a}}]}]",
            "spec/rules/0/to/0/operation/paths",
        ),
        (
            "Telemetry",
            "tracing: [{randomSamplingPercentage: ten}]",
            "spec/tracing/0/randomSamplingPercentage",
        ),
    ];
    let group = |kind: &str| match kind {
        "PeerAuthentication" | "AuthorizationPolicy" => "security.istio.io",
        "Telemetry" => "telemetry.istio.io",
        _ => "networking.istio.io",
    };
    let docs: Vec<(String, Value)> = bad
        .iter()
        .map(|(kind, spec, _)| {
            let spec = if spec.starts_with('{') {
                spec.to_string()
            } else {
                format!("{{{spec}}}")
            };
            let doc = format!(
                "apiVersion: {}/v1\nkind: {kind}\nmetadata: {{name: bad}}\nspec: {spec}\n",
                group(kind)
            );
            (spec.clone(), weft_api::parse_document(&doc).unwrap())
        })
        .collect();
    let refused = spec_errors(&manifest, &docs);
    assert_eq!(refused.len(), bad.len(), "{refused:?}");
    for ((at, errors), (_, spec, expected)) in refused.iter().zip(&bad) {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{at} ({spec}) must be refused at {expected}: {errors:?}"
        );
    }
}

#[tokio::test]
async fn plaintext_xds_is_served_only_when_asked_for() {
    let find = |manifest: &str, kind: &str| -> Value {
        weft_api::split_documents(manifest)
            .into_iter()
            .filter_map(|(_, doc)| serde_norway::from_str::<Value>(doc).ok())
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == "istiod")
            .unwrap()
    };
    let default = generate(&[]).await;
    assert!(!default.contains("15010"), "{default}");
    let plaintext = generate(&["--plaintext-xds"]).await;
    let service = find(&plaintext, "Service");
    assert_eq!(
        service["spec"]["ports"][0],
        serde_json::json!({"name": "grpc-xds", "port": 15010, "targetPort": 15010, "protocol": "TCP"})
    );
    let container = &find(&plaintext, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["ports"][0],
        serde_json::json!({"name": "grpc-xds", "containerPort": 15010, "protocol": "TCP"})
    );
    let args = container["args"].as_array().unwrap();
    let at = args.iter().position(|a| a == "--grpc").expect("--grpc");
    assert_eq!(args[at + 1], "0.0.0.0:15010");
    // The chart's value does the same.
    let values = serde_json::json!({"plaintextXds": true});
    assert_eq!(
        objects(&render(Some(&values.to_string()))),
        objects(&plaintext)
    );
}

#[tokio::test]
async fn istiods_container_runs_weft_control_with_arguments_it_takes() {
    for options in [&[][..], &["--plaintext-xds"]] {
        let manifest = generate(options).await;
        let deployment: Value = weft_api::split_documents(&manifest)
            .into_iter()
            .filter_map(|(_, doc)| serde_norway::from_str::<Value>(doc).ok())
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "istiod")
            .unwrap();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        // Outside a pod, with no kubeconfig, it gets as far as looking for the cluster.
        let home = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(WEFT)
            .args(&args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", home.path())
            .env("WEFT_HOME", home.path())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("no Kubernetes configuration"),
            "{args:?}: {err}"
        );
    }
}

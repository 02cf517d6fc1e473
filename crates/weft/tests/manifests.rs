//! `weft manifest generate` as a cluster would take it: every object passes Kubernetes
//! 1.33's schemas, strictly (PyPI's kubernetes-validate), and the Helm chart in
//! `charts/weft`, rendered by Helm itself (helm-python-sdk bundles Helm's SDK), is the same
//! objects, with and without values set. `.ci/run` installs both into `.ci/venv` from
//! `.ci/requirements.txt`.

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

#[tokio::test]
async fn istiods_container_runs_weft_control_with_arguments_it_takes() {
    let manifest = generate(&[]).await;
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

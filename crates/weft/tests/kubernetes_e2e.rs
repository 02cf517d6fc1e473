//! Weft on a real Kubernetes cluster, end to end: `weft install`, Bookinfo injected in a
//! labelled namespace, its page through the sidecars, as Istio's getting-started does.
//!
//! No cluster can run on Weft's development machines, so these never run there or in CI:
//! they are ignored, and run by hand against a cluster that can pull the image:
//!
//! ```text
//! WEFT_E2E_KUBECONFIG=~/.kube/config WEFT_E2E_IMAGE=registry.example/weft:0.1.0 \
//!     cargo test -p weft --test kubernetes_e2e -- --ignored
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NAMESPACE: &str = "weft-e2e";

struct Cluster {
    kubeconfig: PathBuf,
    image: String,
}

impl Cluster {
    /// The cluster the environment names; a run without one fails, never skips.
    fn from_env() -> Cluster {
        let kubeconfig = std::env::var_os("WEFT_E2E_KUBECONFIG")
            .map(PathBuf::from)
            .expect("WEFT_E2E_KUBECONFIG names the kubeconfig of the cluster to test against");
        let image = std::env::var("WEFT_E2E_IMAGE")
            .expect("WEFT_E2E_IMAGE names the image (docker build -t IMAGE .) the cluster pulls");
        Cluster { kubeconfig, image }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `check` holds, or fails once `within` passes.
    async fn until(&self, within: Duration, what: &str, check: impl Fn() -> bool) {
        let held = support::poll_until(within, || std::future::ready(check().then_some(()))).await;
        assert!(held.is_some(), "{what} within {within:?}");
    }
}

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/istio-samples")
}

#[tokio::test]
#[ignore = "needs a real cluster: WEFT_E2E_KUBECONFIG and WEFT_E2E_IMAGE (see the module's doc)"]
async fn install_inject_bookinfo_and_serve_its_page_through_the_sidecars() {
    let cluster = Cluster::from_env();
    let out = Command::new(support::WEFT)
        .args(["install", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .args(["--image", &cluster.image, "--timeout", "300"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weft install: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let _ = cluster.kubectl(&["create", "namespace", NAMESPACE]);
    cluster.kubectl(&[
        "label",
        "namespace",
        NAMESPACE,
        "istio-injection=enabled",
        "--overwrite",
    ]);
    let bookinfo = samples().join("bookinfo/platform/bookinfo.yaml");
    cluster.kubectl(&[
        "-n",
        NAMESPACE,
        "apply",
        "-f",
        &bookinfo.display().to_string(),
    ]);
    cluster
        .until(Duration::from_secs(600), "Bookinfo's pods ready", || {
            let ready = cluster.kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        ]);
            let lines: Vec<&str> = ready.lines().collect();
            lines.len() >= 6 && lines.iter().all(|l| *l == "True")
        })
        .await;
    // Every pod has its sidecar (the injected native sidecar is an init container).
    let sidecars = cluster.kubectl(&[
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.spec.initContainers[*].name}{'\\n'}{end}",
    ]);
    assert!(
        sidecars.lines().all(|l| l.contains("istio-proxy")),
        "{sidecars}"
    );

    // Istio's check from getting-started: the page, from ratings, through both sidecars.
    let ratings = cluster.kubectl(&[
        "-n",
        NAMESPACE,
        "get",
        "pod",
        "-l",
        "app=ratings",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let page = cluster.kubectl(&[
        "-n",
        NAMESPACE,
        "exec",
        &ratings,
        "-c",
        "ratings",
        "--",
        "curl",
        "-sS",
        "productpage:9080/productpage",
    ]);
    assert!(
        page.contains("<title>Simple Bookstore App</title>"),
        "{page}"
    );

    cluster.kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"]);
}

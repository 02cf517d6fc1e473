//! `weft control --kubernetes` against a fake API server (no real one can run here; see
//! `weft-bench/src/fake_apiserver.rs`), kept honest by the real `kubectl`, which applies Istio's
//! CRDs, Bookinfo and Istio's routing files to it, lists and watches it. Real `weft proxy`
//! processes follow the control plane: Bookinfo's Services with the pods EndpointSlices
//! list as ready are what they route to, an EndpointSlice change reaches them, a watch that
//! comes back after a 410 Gone relists, and a VirtualService applied with kubectl routes.

mod support;

use serde_json::json;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;
use weft_bench::fake_apiserver::FakeApiServer;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/istio-samples")
}

/// The real kubectl, pointed at the fake.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("kubectl");
        c.env("KUBECONFIG", &self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .await
            .expect("kubectl (Debian's kubernetes-client) talks to the fake API server");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply --server-side`; the fake serves no OpenAPI schema, so kubectl's own
    /// validation is off.
    async fn apply(&self, file: &Path) -> String {
        self.run(&[
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ])
        .await
    }
}

/// What the kubelet and the EndpointSlice controller would write for one reviews pod: the
/// Pod, owned by its Deployment's ReplicaSet, and an EndpointSlice listing it.
fn reviews_pod(fake: &FakeApiServer, version: &str, backend: SocketAddr, ready: bool) {
    let hash = "7f9c6d5b8";
    let pod = format!("reviews-{version}-{hash}-x{version}");
    fake.put(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": "default",
            "labels": {"app": "reviews", "version": version, "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("reviews-{version}-{hash}"), "uid": "rs", "controller": true}]},
        "spec": {"serviceAccountName": "bookinfo-reviews",
            "containers": [{"name": "reviews", "image": "docker.io/istio/examples-bookinfo-reviews-v1"}]},
        "status": {"phase": "Running", "podIP": backend.ip().to_string()},
    }));
    fake.put(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("reviews-{version}"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [backend.ip().to_string()],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}}],
    }));
}

/// Which backends answer `reviews:9080` through the proxy, over `n` requests.
async fn answering(outbound: SocketAddr, n: usize) -> BTreeSet<String> {
    let c = client();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        match send(&c, "GET", outbound, "reviews:9080", "/reviews/0", &[]).await {
            Ok(a) if a.status == 200 => {
                seen.insert(a.served_by().to_string());
            }
            Ok(a) => {
                seen.insert(format!("{} {}", a.status, a.text()));
            }
            Err(e) => {
                seen.insert(e);
            }
        }
    }
    seen
}

/// Waits until exactly `wanted` answer (40 requests a round; round robin over three at most).
async fn until_answering(outbound: SocketAddr, wanted: &[&str], what: &str) {
    let wanted: BTreeSet<String> = wanted.iter().map(|s| s.to_string()).collect();
    let last = std::sync::Mutex::new(BTreeSet::new());
    let got = poll_until(Duration::from_secs(30), || async {
        let seen = answering(outbound, 40).await;
        let done = seen == wanted;
        *last.lock().unwrap() = seen;
        done.then_some(())
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(got.is_some(), "{what}: wanted {wanted:?}, last {last:?}");
}

async fn ready(weft: &mut Weft, addr: SocketAddr, path: &str) {
    let up = answers_ok(weft, addr, path).await;
    assert!(up, "{path} on {addr}:\n{}", weft.output());
}

/// The requests the fake has seen that start with `prefix`.
fn requests_to(fake: &FakeApiServer, prefix: &str) -> Vec<String> {
    let requests = fake.requests.lock().unwrap();
    requests
        .iter()
        .filter(|r| r.starts_with(prefix))
        .cloned()
        .collect()
}

/// A `weft control --kubernetes` process, ready.
struct Control {
    weft: Weft,
    /// Plaintext discovery and admin (15010).
    grpc: SocketAddr,
    /// The CA and discovery over TLS (15012).
    grpc_tls: SocketAddr,
}

/// `weft control --kubernetes` on `state`, as replica `name`, once it is ready.
async fn control_plane(kubeconfig: &Path, state: &Path, name: &str) -> Control {
    let (mut weft, [grpc, grpc_tls, monitoring]) = spawn_control_plane(kubeconfig, state, name);
    ready(&mut weft, monitoring, "/ready").await;
    Control {
        weft,
        grpc,
        grpc_tls,
    }
}

/// `weft control --kubernetes`, not waiting for anything, and its gRPC, gRPC over TLS and
/// monitoring addresses.
fn spawn_control_plane(kubeconfig: &Path, state: &Path, name: &str) -> (Weft, [SocketAddr; 3]) {
    let addrs = free_addrs::<3>();
    let [grpc, grpc_tls, monitoring] = addrs;
    let args: Vec<String> = [
        "control",
        "--kubernetes",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--pod-name",
        name,
        "--config-dir",
        &state.display().to_string(),
        "--grpc",
        &grpc.to_string(),
        "--monitoring",
        &monitoring.to_string(),
        "--grpc-tls",
        &grpc_tls.to_string(),
        "--no-dashboard",
    ]
    .map(String::from)
    .to_vec();
    (Weft::spawn(&args), addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_control_serves_the_clusters_bookinfo_to_proxies_and_follows_kubectl() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
        cache: dir.path().join("kube-cache"),
    };

    // Istio's CRDs and Bookinfo, as a user installs them.
    let out = kubectl
        .apply(&samples().join("crds/crd-all.gen.yaml"))
        .await;
    assert!(
        out.contains("virtualservices.networking.istio.io serverside-applied"),
        "{out}"
    );
    let out = kubectl
        .apply(&samples().join("bookinfo/platform/bookinfo.yaml"))
        .await;
    assert!(out.contains("service/reviews serverside-applied"), "{out}");
    let services = kubectl.run(&["get", "services", "-o", "name"]).await;
    for s in ["details", "productpage", "ratings", "reviews"] {
        assert!(services.contains(&format!("service/{s}\n")), "{services}");
    }
    let crds = kubectl.run(&["get", "crd", "-o", "name"]).await;
    assert!(
        crds.contains(
            "customresourcedefinition.apiextensions.k8s.io/destinationrules.networking.istio.io"
        ),
        "{crds}"
    );

    // reviews v1 ready, v2 not yet.
    let v1 = Backend::start("127.0.0.31", "reviews-v1").await;
    let v2 = Backend::start("127.0.0.32", "reviews-v2").await;
    let v3 = Backend::start("127.0.0.33", "reviews-v3").await;
    reviews_pod(&fake, "v1", v1.addr, true);
    reviews_pod(&fake, "v2", v2.addr, false);

    let state = tempfile::tempdir().unwrap();
    let Control {
        weft: control,
        grpc,
        grpc_tls,
    } = control_plane(&kubeconfig, state.path(), "istiod-0").await;
    assert!(
        control.stderr().contains("Kubernetes watches synced"),
        "{}",
        control.output()
    );

    // A real proxy, productpage's sidecar, following the control plane.
    let addrs = free_addrs::<4>();
    let [outbound, _, _, health] = addrs;
    let first_outbound = outbound;
    let mut proxy = Weft::spawn(&proxy_args(grpc, "productpage-v1", addrs));
    ready(&mut proxy, health, "/healthz/ready").await;
    until_answering(outbound, &["reviews-v1"], "only the ready pod serves").await;

    // An EndpointSlice change reaches the proxy: v2 becomes ready.
    reviews_pod(&fake, "v2", v2.addr, true);
    until_answering(outbound, &["reviews-v1", "reviews-v2"], "v2 ready too").await;

    // The API server forgets its history and drops every watch: the watches come back
    // from their resourceVersion, get 410 Gone, and list again, which is how they see that
    // v1 went and v3 came meanwhile.
    fake.compact();
    fake.cut_watches();
    fake.delete(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "default",
        "reviews-v1",
    );
    reviews_pod(&fake, "v3", v3.addr, true);
    until_answering(outbound, &["reviews-v2", "reviews-v3"], "after the relist").await;
    let slices = requests_to(&fake, "GET /apis/discovery.k8s.io/v1/endpointslices?");
    let (watches, lists): (Vec<&String>, Vec<&String>) =
        slices.iter().partition(|r| r.contains("watch=true"));
    assert!(
        watches.len() >= 2 && lists.len() >= 2,
        "a watch resumed, was gone, and a list followed: {slices:#?}"
    );

    // kubectl get -w sees what kubectl apply makes; the proxy routes by it: Istio's
    // destination-rule-all.yaml and virtual-service-reviews-v3.yaml, unchanged.
    let mut watch = kubectl
        .command(&["get", "virtualservices", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let networking = samples().join("bookinfo/networking");
    kubectl
        .apply(&networking.join("destination-rule-all.yaml"))
        .await;
    kubectl
        .apply(&networking.join("virtual-service-reviews-v3.yaml"))
        .await;
    until_answering(outbound, &["reviews-v3"], "the VirtualService routes to v3").await;
    let mut watched = String::new();
    let stdout = watch.stdout.as_mut().unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 512];
        while !watched.contains("virtualservice.networking.istio.io/reviews") {
            let n = stdout.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            watched.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(seen.is_ok(), "kubectl get -w printed {watched:?}");
    let _ = watch.kill().await;

    // The control plane takes no writes of its own: the cluster is the source.
    let vs = dir.path().join("vs.yaml");
    std::fs::write(
        &vs,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: extra}\nspec:\n  hosts: [ratings]\n  http: [{route: [{destination: {host: ratings}}]}]\n",
    )
    .unwrap();
    let (status, out, err) = run_weft(&[
        "--control-plane".into(),
        format!("http://{grpc}"),
        "apply".into(),
        "-f".into(),
        vs.display().to_string(),
    ])
    .await;
    assert!(!status.success(), "{out}");
    assert!(err.contains("kubectl apply"), "{err}");
    eprintln!("weft apply on a Kubernetes control plane: {err}");

    // An injected sidecar proves who it is with its projected service account token,
    // which the control plane has the cluster review: it gets its certificate and follows
    // discovery over 15012 with it. A token for another account, or for another audience,
    // buys nothing.
    let root = state.path().join(".weft/ca/root-cert.pem");
    let sidecar = |token: String, account: &str| {
        let file = dir.path().join(format!("token-{account}-{}", token.len()));
        std::fs::write(&file, &token).unwrap();
        let addrs = free_addrs::<4>();
        let mut args = proxy_args(grpc, "productpage-v1", addrs);
        args[2] = format!("https://{grpc_tls}");
        args.extend(
            [
                "--credential-file",
                &file.display().to_string(),
                "--root-cert",
                &root.display().to_string(),
                "--service-account",
                account,
                "--ca-address",
                &grpc_tls.to_string(),
            ]
            .map(String::from),
        );
        (Weft::spawn(&args), addrs)
    };
    let token = fake.issue_token("default", "bookinfo-productpage", "istio-ca");
    let (mut injected, [outbound, _, _, health]) = sidecar(token, "bookinfo-productpage");
    ready(&mut injected, health, "/healthz/ready").await;
    until_answering(
        outbound,
        &["reviews-v3"],
        "over 15012 with a reviewed token",
    )
    .await;
    // An EndpointSlice change reaches both proxies: v3 not ready leaves the route with no
    // endpoint, ready again restores it.
    reviews_pod(&fake, "v3", v3.addr, false);
    for at in [first_outbound, outbound] {
        until_answering(
            at,
            &["503 Service Unavailable no healthy upstream"],
            "v3 not ready",
        )
        .await;
    }
    reviews_pod(&fake, "v3", v3.addr, true);
    for at in [first_outbound, outbound] {
        until_answering(at, &["reviews-v3"], "v3 ready again").await;
    }
    assert!(
        injected
            .stderr()
            .contains("spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        "{}",
        injected.output()
    );
    // Certificates and keys stay out of both logs; identities and expiry are what they say.
    for log in [injected.output(), control.output()] {
        assert!(
            !log.contains("PRIVATE KEY") && !log.contains("BEGIN CERTIFICATE"),
            "{log}"
        );
    }
    for (token, account) in [
        // Another account's token, for this account's identity.
        (
            fake.issue_token("default", "bookinfo-reviews", "istio-ca"),
            "bookinfo-productpage",
        ),
        // The right account, the wrong audience.
        (
            fake.issue_token("default", "bookinfo-productpage", "vault"),
            "bookinfo-productpage",
        ),
        ("not-a-token".to_string(), "bookinfo-productpage"),
    ] {
        let (refused, [_, _, _, health]) = sidecar(token.clone(), account);
        let answered = poll_until(Duration::from_secs(3), || async {
            send(&client(), "GET", health, "localhost", "/healthz/ready", &[])
                .await
                .ok()
                .filter(|a| a.status == 200)
        })
        .await;
        assert!(answered.is_none(), "{token} made a ready proxy");
        // Refused by the CA: another account's token proves that account, which is not
        // the identity the proxy's CSR asks for.
        let why = poll_until(Duration::from_secs(10), || {
            let log = refused.stderr();
            std::future::ready(
                log.contains("refused the certificate request")
                    .then_some(log),
            )
        })
        .await;
        assert!(why.is_some(), "{token}: {}", refused.output());
    }
    eprintln!(
        "refusals in the control plane's log: {}",
        control
            .stderr()
            .lines()
            .filter(|l| l.contains("refused a certificate request"))
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_install_applies_the_manifest_server_side_and_waits_for_istiod() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let mut install = Weft::spawn(
        &[
            "install",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--timeout",
            "60",
        ]
        .map(String::from),
    );
    // The fake runs no controllers: the test makes each Deployment available once it is
    // there, as the Deployment controller and the kubelet would.
    for name in ["istiod", "prometheus"] {
        let deployment = poll_until(Duration::from_secs(30), || {
            std::future::ready(fake.get("apps/v1", "Deployment", "istio-system", name))
        })
        .await
        .unwrap_or_else(|| panic!("no deployment {name}: {}", install.output()));
        let mut available = deployment;
        available["status"] = json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1});
        fake.put(available);
    }
    let exited = install.wait_exit(Duration::from_secs(30)).await;
    assert!(exited.is_some_and(|s| s.success()), "{}", install.output());
    let log = install.stderr();
    let total = weft_kube::manifest::generate(&Default::default()).len();
    assert!(log.contains(&format!("[{total}/{total}] ")), "{log}");
    assert!(log.contains("deployment/istiod is available"), "{log}");

    // Server-side apply, as istioctl install does: field manager weft, taking over fields.
    let requests = fake.requests.lock().unwrap().clone();
    let patch = requests
        .iter()
        .find(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/istio-system/deployments/istiod?"))
        .unwrap_or_else(|| panic!("{requests:#?}"));
    assert!(
        patch.contains("fieldManager=weft") && patch.contains("force=true"),
        "{patch}"
    );
    assert!(requests.iter().any(|r| r.starts_with(
        "PATCH /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/istio-sidecar-injector?"
    )));
    // CRDs first, so the kinds exist before anything of theirs.
    let first = requests
        .iter()
        .position(|r| r.starts_with("PATCH "))
        .unwrap();
    assert!(
        requests[first].contains("/customresourcedefinitions/"),
        "{}",
        requests[first]
    );

    let kubectl = Kubectl {
        kubeconfig,
        cache: dir.path().join("kube-cache"),
    };
    let deployments = kubectl
        .run(&["-n", "istio-system", "get", "deployments", "-o", "name"])
        .await;
    assert_eq!(
        deployments,
        "deployment.apps/istiod\ndeployment.apps/prometheus\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_writes_the_mesh_root_where_pods_and_the_api_server_read_it() {
    use base64::Engine;
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let manifest = weft_kube::manifest::generate(&Default::default());
    let webhook = manifest
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    fake.put(webhook.clone());

    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = control_plane(&kubeconfig, &state_a, "istiod-a").await.weft;
    let root = std::fs::read_to_string(state_a.join(".weft/ca/root-cert.pem")).unwrap();
    let holder = |fake: &FakeApiServer| {
        fake.get(
            "coordination.k8s.io/v1",
            "Lease",
            "istio-system",
            "istio-leader",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let root_in = |fake: &FakeApiServer, ns: &str| {
        fake.get("v1", "ConfigMap", ns, "istio-ca-root-cert")
            .and_then(|c| c["data"]["root-cert.pem"].as_str().map(str::to_string))
    };
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
        cache: dir.path().join("kube-cache"),
    };
    // (kubectl create would send protobuf, which the fake does not read.)
    let ns = dir.path().join("bookinfo-namespace.yaml");
    std::fs::write(
        &ns,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n",
    )
    .unwrap();
    kubectl.apply(&ns).await;
    let written = poll_until(Duration::from_secs(30), || {
        let done = holder(&fake).as_deref() == Some("istiod-a")
            && ["default", "kube-system", "istio-system", "bookinfo"]
                .iter()
                .all(|ns| root_in(&fake, ns).as_deref() == Some(root.as_str()));
        std::future::ready(done.then_some(()))
    })
    .await;
    assert!(written.is_some(), "{}", a.output());
    let bundle = poll_until(Duration::from_secs(20), || {
        std::future::ready(
            fake.get(
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfiguration",
                "",
                "istio-sidecar-injector",
            )
            .and_then(|w| {
                w["webhooks"][0]["clientConfig"]["caBundle"]
                    .as_str()
                    .map(str::to_string)
            }),
        )
    })
    .await;
    assert_eq!(
        bundle.as_deref(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(&root)
                .as_str()
        )
    );
    // The rest of the webhook is as installed.
    let now = fake
        .get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "",
            "istio-sidecar-injector",
        )
        .unwrap();
    assert_eq!(now["webhooks"][0]["failurePolicy"], "Fail");

    // A second replica with the same CA (as replicas share a plugged-in cacerts) serves but
    // does not write while the first holds the lease; once the first is gone without a
    // word, its lease lapses and the second takes it.
    std::fs::create_dir_all(state_b.join(".weft")).unwrap();
    let copied = std::process::Command::new("cp")
        .args(["-a"])
        .arg(state_a.join(".weft/ca"))
        .arg(state_b.join(".weft/ca"))
        .status()
        .unwrap();
    assert!(copied.success());
    let b = control_plane(&kubeconfig, &state_b, "istiod-b").await.weft;
    assert_eq!(holder(&fake).as_deref(), Some("istiod-a"));
    a.kill();
    let took = poll_until(Duration::from_secs(40), || {
        std::future::ready((holder(&fake).as_deref() == Some("istiod-b")).then_some(()))
    })
    .await;
    assert!(took.is_some(), "{}", b.output());
    let lease = fake
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "istio-system",
            "istio-leader",
        )
        .unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");

    // The holder reports on a VirtualService Weft rejects in its status, as istiod's
    // status writer does, and clears it once it is fixed; a bad object keeps no replica
    // from being ready.
    for crd in manifest
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
    {
        fake.put(crd.clone());
    }
    let vs = |route: serde_json::Value| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": route}]}})
    };
    fake.put(vs(
        json!([{"destination": {"host": "reviews", "subset": "v1"}, "weight": "most"}]),
    ));
    let messages = || {
        fake.get(
            "networking.istio.io/v1",
            "VirtualService",
            "default",
            "reviews",
        )
        .map(|v| v["status"]["validationMessages"].clone())
        .unwrap_or_default()
    };
    let reported = poll_until(Duration::from_secs(30), || {
        let m = messages();
        std::future::ready(
            m[0]["description"]
                .as_str()
                .is_some_and(|d| d.contains("weight"))
                .then_some(m),
        )
    })
    .await;
    let reported = reported.unwrap_or_else(|| panic!("{}", b.output()));
    assert_eq!(reported[0]["type"]["code"], "IST0106", "{reported}");
    assert_eq!(reported[0]["level"], "ERROR", "{reported}");
    // A replica that starts now, with the bad object in the cluster, is ready all the same.
    let _c = control_plane(&kubeconfig, &dir.path().join("c"), "istiod-c").await;
    fake.put(vs(
        json!([{"destination": {"host": "reviews", "subset": "v1"}}]),
    ));
    let cleared = poll_until(Duration::from_secs(30), || {
        std::future::ready(messages().is_null().then_some(()))
    })
    .await;
    assert!(cleared.is_some(), "{}", messages());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_benchmark_measures_endpoint_slice_changes_through_the_watch() {
    let out = tempfile::tempdir().unwrap();
    let (status, stdout, err) = run_weft_within(
        &[
            "bench",
            "control-plane",
            "--kubernetes",
            "--proxies",
            "10",
            "--services",
            "20",
            "--namespaces",
            "5",
            "--changes",
            "5",
            "--out",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([out.path().display().to_string()])
        .collect::<Vec<_>>(),
        Duration::from_secs(120),
    )
    .await;
    assert!(status.success(), "{stdout}{err}");
    assert!(stdout.contains("EndpointSlice write alone"), "{stdout}");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("control-plane.10-proxies.kubernetes.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(results["snapshot"]["synced"], 10, "{results:#}");
    // A namespace's 4 services, their 40 endpoints and its Sidecar, from the cluster.
    assert_eq!(results["snapshot"]["resources_min"], 45, "{results:#}");
    assert_eq!(results["snapshot"]["resources_max"], 45, "{results:#}");
    assert_eq!(results["changes"]["converged"], 5, "{results:#}");
    for s in results["changes"]["samples"].as_array().unwrap() {
        assert_eq!(
            (&s["affected"], &s["updated"], &s["outside"]),
            (&json!(2), &json!(2), &json!(0)),
            "{s}"
        );
    }
    assert_eq!(results["unexpected"], json!([]), "{results:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_dashboard_port_forwards_to_istiods_pod_as_istioctl_dashboard_does() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    // istiod's pod, its dashboard port answered by a stand-in at the pod's IP.
    let pod_ip = "127.0.0.61";
    let dashboard = tokio::net::TcpListener::bind((pod_ip, weft_kube::manifest::DASHBOARD_PORT))
        .await
        .unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = dashboard.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = [0u8; 1024];
                let _ = s.read(&mut head).await;
                let body = "the dashboard in istiod's pod";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    for (name, phase) in [("istiod-old-1", "Failed"), ("istiod-7d9f-abcde", "Running")] {
        fake.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "istio-system", "labels": {"app": "istiod"}},
            "spec": {"containers": []},
            "status": {"phase": phase, "podIP": pod_ip}}));
    }
    let [local] = free_addrs::<1>();
    let forward = Weft::spawn(
        &[
            "dashboard",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--browser=false",
            "--address",
            &local.to_string(),
        ]
        .map(String::from),
    );
    let url = format!("http://{local}");
    let printed = poll_until(Duration::from_secs(20), || {
        std::future::ready(forward.stdout().contains(&url).then_some(()))
    })
    .await;
    assert!(printed.is_some(), "{}", forward.output());
    for _ in 0..2 {
        let answer = send(&client(), "GET", local, "localhost", "/", &[])
            .await
            .unwrap();
        assert_eq!(answer.text(), "the dashboard in istiod's pod");
    }
    assert!(
        forward
            .stderr()
            .contains("to istio-system/istiod-7d9f-abcde:20001"),
        "{}",
        forward.output()
    );
    let requests = fake.requests.lock().unwrap().clone();
    let forwards = requests
        .iter()
        .filter(|r| {
            r.contains("/api/v1/namespaces/istio-system/pods/istiod-7d9f-abcde/portforward?")
                && r.contains("ports=20001")
        })
        .count();
    assert!(
        forwards >= 2,
        "a port-forward per connection: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_api_server_is_away_the_last_state_serves_and_then_changes_resume() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    fake.put(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]}}));
    let v1 = Backend::start("127.0.0.34", "reviews-v1").await;
    let v2 = Backend::start("127.0.0.35", "reviews-v2").await;
    reviews_pod(&fake, "v1", v1.addr, true);

    let state = dir.path().join("state");
    let Control {
        weft: control,
        grpc,
        ..
    } = control_plane(&kubeconfig, &state, "istiod-0").await;

    // Away: every watch ends, and its retries (kube-rs's client backs off on 503) are
    // refused too.
    fake.set_away(true);
    let retrying = poll_until(Duration::from_secs(20), || {
        let refused = fake.requests.lock().unwrap().iter().any(|r| {
            r.starts_with("503 GET /apis/discovery.k8s.io/v1/endpointslices")
                && r.contains("watch=true")
        });
        std::future::ready(refused.then_some(()))
    })
    .await;
    assert!(retrying.is_some(), "{}", control.output());
    // A proxy that connects now still gets the whole registry.
    let addrs = free_addrs::<4>();
    let [outbound, _, _, health] = addrs;
    let mut proxy = Weft::spawn(&proxy_args(grpc, "productpage-v1", addrs));
    ready(&mut proxy, health, "/healthz/ready").await;
    until_answering(outbound, &["reviews-v1"], "from the last state").await;

    // Back: the watches list again and a change made meanwhile arrives.
    reviews_pod(&fake, "v2", v2.addr, true);
    fake.set_away(false);
    until_answering(
        outbound,
        &["reviews-v1", "reviews-v2"],
        "after the API server came back",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_is_not_ready_until_every_kind_is_listed() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    // A slow API server: the EndpointSlices' list does not come.
    fake.hold_lists("discovery.k8s.io", "endpointslices");
    let (mut control, [_, _, monitoring]) =
        spawn_control_plane(&kubeconfig, &dir.path().join("state"), "istiod-0");
    // Every other kind listed, and watched since; the EndpointSlices asked for.
    let others = [
        "GET /api/v1/namespaces?",
        "GET /api/v1/services?",
        "GET /api/v1/pods?",
        "GET /api/v1/secrets?",
        "GET /api/v1/namespaces/istio-system/configmaps?",
        "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions?",
    ];
    let asked = poll_until(Duration::from_secs(20), || {
        let watched = others.iter().all(|kind| {
            requests_to(&fake, kind)
                .iter()
                .any(|r| r.contains("watch=true"))
        });
        let slices =
            !requests_to(&fake, "GET /apis/discovery.k8s.io/v1/endpointslices?").is_empty();
        std::future::ready((watched && slices).then_some(()))
    })
    .await;
    assert!(
        asked.is_some(),
        "{:#?}\n{}",
        fake.requests.lock().unwrap(),
        control.output()
    );
    // Without them the registry would be partial: not ready, a while on.
    let early = poll_until(Duration::from_secs(3), || async {
        send(&client(), "GET", monitoring, "localhost", "/ready", &[])
            .await
            .ok()
            .filter(|a| a.status == 200)
    })
    .await;
    assert!(
        early.is_none(),
        "ready before the EndpointSlices were listed"
    );
    assert!(control.exited().is_none(), "{}", control.output());

    fake.release_lists("discovery.k8s.io", "endpointslices");
    ready(&mut control, monitoring, "/ready").await;
    assert!(
        control.stderr().contains("Kubernetes watches synced"),
        "{}",
        control.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_take_bookmarks_and_resume_from_the_last_ones_version_without_listing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let control = control_plane(&kubeconfig, &dir.path().join("state"), "istiod-0").await;
    const SERVICES: &str = "GET /api/v1/services?";
    let version = |request: &str| -> u64 {
        request
            .split('&')
            .find_map(|kv| kv.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no resourceVersion in {request}"))
    };
    let watches = || -> Vec<String> {
        requests_to(&fake, SERVICES)
            .into_iter()
            .filter(|r| r.contains("watch=true"))
            .collect()
    };
    let first = poll_until(Duration::from_secs(10), || {
        std::future::ready(watches().first().cloned())
    })
    .await
    .unwrap_or_else(|| panic!("no watch of Services: {}", control.weft.output()));
    assert!(first.contains("allowWatchBookmarks=true"), "{first}");
    let listed = version(&first);

    // A watch that does not ask for bookmarks gets none: a raw one, as curl would make it.
    let mut raw = tokio::net::TcpStream::connect(fake.addr).await.unwrap();
    raw.write_all(
        b"GET /api/v1/namespaces/default/serviceaccounts?watch=true HTTP/1.1\r\nhost: fake\r\n\r\n",
    )
    .await
    .unwrap();

    // Writes of a kind the control plane does not watch move the server's version on:
    // the Services' watch hears of it only by bookmarks.
    let written = fake.put(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "bookinfo-reviews", "namespace": "default"}}));
    let moved: u64 = written["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(moved > listed);
    let mut seen = Vec::new();
    let raw_got_it = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("bookinfo-reviews") {
            let n = raw.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the raw watch ended: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(raw_got_it.is_ok(), "{}", String::from_utf8_lossy(&seen));
    let bookmarked = |at_least: u64| {
        let sent = fake.bookmarks.lock().unwrap().clone();
        std::future::ready(
            sent.iter()
                .filter(|(plural, v)| plural == "services" && *v >= at_least)
                .count(),
        )
    };
    // Two a second apart, so the raw watch has had its chance of one.
    let twice = poll_until(Duration::from_secs(10), || async {
        (bookmarked(moved).await >= 2).then_some(())
    })
    .await;
    assert!(twice.is_some(), "{:?}", fake.bookmarks.lock().unwrap());
    let sent = fake.bookmarks.lock().unwrap().clone();
    assert!(
        !sent.iter().any(|(plural, _)| plural == "serviceaccounts"),
        "a watch that asked for none got bookmarks: {sent:?}"
    );

    // The watches cut, the Services' comes back from the last bookmark's version, and
    // lists nothing again.
    let before = requests_to(&fake, SERVICES).len();
    fake.cut_watches();
    let resumed = poll_until(Duration::from_secs(10), || {
        std::future::ready(requests_to(&fake, SERVICES).get(before).cloned())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the Services' watch never came back: {}",
            control.weft.output()
        )
    });
    assert!(resumed.contains("watch=true"), "listed again: {resumed}");
    let from = version(&resumed);
    let sent = fake.bookmarks.lock().unwrap().clone();
    assert!(
        from >= moved && sent.contains(&("services".to_string(), from)),
        "resumed from {from}, the list's {listed}; bookmarks {sent:?}"
    );
    // And it still follows: a Service made now arrives.
    fake.put(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ratings", "namespace": "default"},
        "spec": {"selector": {"app": "ratings"}, "ports": [{"name": "http", "port": 9080}]}}));
    let followed = poll_until(Duration::from_secs(10), || async {
        let (status, out, _) = run_weft(&[
            "--control-plane".into(),
            format!("http://{}", control.grpc),
            "get".into(),
            "services".into(),
        ])
        .await;
        (status.success() && out.contains("ratings")).then_some(())
    })
    .await;
    assert!(followed.is_some(), "{}", control.weft.output());
    let lists = requests_to(&fake, SERVICES)
        .into_iter()
        .filter(|r| !r.contains("watch=true"))
        .count();
    assert_eq!(lists, 1, "{:#?}", requests_to(&fake, SERVICES));
}

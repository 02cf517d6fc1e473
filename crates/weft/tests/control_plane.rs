//! End-to-end tests of `weft control` with real `weft proxy` processes: convergence on
//! acknowledgement, a rejected version, the control plane killed under load and restarted,
//! and killed in the middle of an apply.
//!
//! Every wait polls a condition (readiness, `weft proxy-status`, the config directory)
//! against a deadline; nothing sleeps hoping something happened.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// A `weft control` process on free ports of 127.0.0.1.
struct Control {
    weft: Weft,
    grpc: SocketAddr,
    monitoring: SocketAddr,
}

impl Control {
    /// `weft control` serving `dir` on the two addresses, not waiting for anything.
    fn spawn(dir: &Path, [grpc, monitoring]: [SocketAddr; 2]) -> Weft {
        let args: Vec<String> = [
            "control",
            "--config-dir",
            &dir.display().to_string(),
            "--grpc",
            &grpc.to_string(),
            "--monitoring",
            &monitoring.to_string(),
            "--grpc-tls",
            "127.0.0.1:0",
            "--no-dashboard",
        ]
        .map(String::from)
        .to_vec();
        Weft::spawn(&args)
    }

    async fn start(dir: &Path, [grpc, monitoring]: [SocketAddr; 2]) -> Control {
        let mut weft = Control::spawn(dir, [grpc, monitoring]);
        let ready = answers_ok(&mut weft, monitoring, "/ready").await;
        assert!(
            ready,
            "weft control not ready on {monitoring}\n{}",
            weft.output()
        );
        Control {
            weft,
            grpc,
            monitoring,
        }
    }
}

/// Runs a CLI verb against the control plane. Generous: some tests apply thousands of
/// objects, each fsynced, on a machine that may be busy.
async fn cli(control: SocketAddr, args: &[&str]) -> (ExitStatus, String, String) {
    let mut all = vec!["--control-plane".to_string(), format!("http://{control}")];
    all.extend(args.iter().map(|a| a.to_string()));
    run_weft_within(&all, Duration::from_secs(60)).await
}

/// Applies a file through `weft apply` and insists it worked.
async fn apply(control: SocketAddr, dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    let (status, out, err) = cli(control, &["apply", "-f", &file.display().to_string()]).await;
    assert!(
        status.success(),
        "weft apply -f {name} failed\n{out}\n{err}"
    );
}

async fn proxy_status(control: SocketAddr) -> Vec<Value> {
    let (status, out, err) = cli(control, &["proxy-status", "-o", "json"]).await;
    assert!(status.success(), "weft proxy-status failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("proxy-status -o json: {e}\n{out}"))
}

/// Waits until every named proxy has acknowledged the version last sent to it, and that
/// version differs from `not` (the one before the change). Returns the versions.
async fn converged(control: SocketAddr, proxies: &[&str], not: &[String]) -> Vec<String> {
    let waited = poll_until(Duration::from_secs(20), || async {
        let status = proxy_status(control).await;
        proxies
            .iter()
            .map(|name| {
                let p = status
                    .iter()
                    .find(|p| p["name"] == format!("{name}.default"))?;
                let acked = p["ackedVersion"].as_str()?.to_string();
                (p["status"] == "SYNCED" && !not.contains(&acked)).then_some(acked)
            })
            .collect::<Option<Vec<String>>>()
    })
    .await;
    match waited {
        Some(versions) => versions,
        None => panic!(
            "proxies {proxies:?} did not all acknowledge a new version: {:#?}",
            proxy_status(control).await
        ),
    }
}

/// A `weft proxy` following the control plane.
struct Sidecar {
    weft: Weft,
    outbound: SocketAddr,
    admin: SocketAddr,
}

impl Sidecar {
    async fn start(control: SocketAddr, name: &str, extra: &[&str]) -> Sidecar {
        let addrs = free_addrs::<4>();
        let [outbound, _, admin, health] = addrs;
        let mut args = proxy_args(control, name, addrs);
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut weft = Weft::spawn(&args);
        let ready = answers_ok(&mut weft, health, "/healthz/ready").await;
        assert!(
            ready,
            "proxy {name} never became ready (it is ready only after its first config)\n{}",
            weft.output()
        );
        Sidecar {
            weft,
            outbound,
            admin,
        }
    }

    /// Which backend answers `GET reviews:9080/` through this proxy.
    async fn reviews(&self, headers: &[(&str, &str)]) -> Result<String, String> {
        let a = send(
            &client(),
            "GET",
            self.outbound,
            "reviews:9080",
            "/",
            headers,
        )
        .await?;
        if a.status != 200 {
            return Err(format!("{} {}", a.status, a.text()));
        }
        Ok(a.served_by().to_string())
    }

    /// The proxy's own count of config versions it has applied.
    async fn applied_versions(&self) -> u64 {
        let a = send(
            &client(),
            "GET",
            self.admin,
            "localhost",
            "/config_dump",
            &[],
        )
        .await
        .expect("config_dump");
        let dump: Value = serde_json::from_slice(&a.body).expect("config_dump is JSON");
        dump["version"].as_u64().expect("config_dump has a version")
    }
}

async fn mesh(dir: &Path) -> (Control, Backend, Backend, tempfile::TempDir) {
    let control = Control::start(dir, free_addrs::<2>()).await;
    let v1 = Backend::start("127.0.0.1", "v1").await;
    let v2 = Backend::start("127.0.0.1", "v2").await;
    let files = tempfile::tempdir().unwrap();
    apply(
        control.grpc,
        files.path(),
        "service.yaml",
        &service_yaml(&v1, &v2),
    )
    .await;
    apply(control.grpc, files.path(), "dr.yaml", DESTINATION_RULE).await;
    (control, v1, v2, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_converges_on_an_applied_virtual_service() {
    let store = tempfile::tempdir().unwrap();
    let (control, _v1, _v2, files) = mesh(store.path()).await;
    let names = ["productpage-0", "productpage-1", "productpage-2"];
    let mut proxies = Vec::new();
    for name in names {
        proxies.push(Sidecar::start(control.grpc, name, &[]).await);
    }
    let before = converged(control.grpc, &names, &[]).await;
    assert!(before.windows(2).all(|w| w[0] == w[1]), "{before:?}");

    apply(control.grpc, files.path(), "vs.yaml", JASON_TO_V2).await;
    let after = converged(control.grpc, &names, &before).await;
    assert!(after.windows(2).all(|w| w[0] == w[1]), "{after:?}");
    for p in &proxies {
        assert_eq!(p.reviews(&[("end-user", "jason")]).await.unwrap(), "v2");
        assert_eq!(p.reviews(&[]).await.unwrap(), "v1");
    }

    // What was applied is stored, one file per object, and read back with its version.
    assert!(store
        .path()
        .join("default.virtualservice.reviews.yaml")
        .exists());
    let (_, out, _) = cli(control.grpc, &["get", "vs", "reviews", "-o", "json"]).await;
    let vs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(vs["spec"]["http"][0]["name"], "jason");
    assert!(vs["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    // What the proxy holds, in istioctl's columns.
    let (_, routes, _) = cli(control.grpc, &["proxy-config", "routes", "productpage-1"]).await;
    assert!(routes.starts_with("NAME"), "{routes}");
    assert!(
        routes.contains("headers: end-user=jason") && routes.contains("reviews.default"),
        "{routes}"
    );
    let (_, clusters, _) = cli(control.grpc, &["proxy-config", "clusters", "productpage-1"]).await;
    assert!(
        clusters.contains("reviews.default.svc.cluster.local   9080   v2"),
        "{clusters}"
    );
    let (_, endpoints, _) = cli(
        control.grpc,
        &[
            "proxy-config",
            "endpoints",
            "productpage-1.default",
            "-o",
            "json",
        ],
    )
    .await;
    let endpoints: Value = serde_json::from_str(&endpoints).unwrap();
    let subsets: Vec<&str> = endpoints
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["cluster"].as_str())
        .collect();
    assert_eq!(
        subsets,
        [
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            "outbound|9080|v2|reviews.default.svc.cluster.local"
        ]
    );
    let (_, describe, _) = cli(control.grpc, &["describe", "svc", "reviews"]).await;
    assert!(
        describe.contains("Subset v2 (version=v2): 1 endpoint") && describe.contains("\"jason\""),
        "{describe}"
    );

    let (_, table, _) = cli(control.grpc, &["proxy-status"]).await;
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(table.matches("SYNCED").count(), 3, "{table}");
}

/// Compiles to far more than 4 KiB (each `\w` is the whole Unicode word class) yet is an
/// ordinary, valid route match.
const HEAVY_REGEX_ROUTE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - uri:
        regex: '/\w{40}'
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_one_proxy_rejects_shows_in_proxy_status_while_the_others_move_on() {
    let store = tempfile::tempdir().unwrap();
    let (control, _v1, _v2, files) = mesh(store.path()).await;
    apply(control.grpc, files.path(), "vs.yaml", JASON_TO_V2).await;
    let lenient = Sidecar::start(control.grpc, "lenient", &[]).await;
    let strict = Sidecar::start(control.grpc, "strict", &["--max-regex-size", "4096"]).await;
    let before = converged(control.grpc, &["lenient", "strict"], &[]).await;

    apply(control.grpc, files.path(), "vs.yaml", HEAVY_REGEX_ROUTE).await;
    converged(control.grpc, &["lenient"], &before).await;
    let rejected = poll_until(DEADLINE, || async {
        let status = proxy_status(control.grpc).await;
        let p = status
            .iter()
            .find(|p| p["name"] == "strict.default")?
            .clone();
        (p["status"] == "STALE" && p["rejection"].is_string()).then_some(p)
    })
    .await
    .unwrap_or_else(|| panic!("strict never rejected the heavy regex"));
    assert_eq!(rejected["ackedVersion"], before[1].as_str());
    let reason = rejected["rejection"].as_str().unwrap();
    assert!(
        reason.contains("VirtualService default/reviews") && reason.contains("--max-regex-size"),
        "{reason}"
    );
    let (_, table, _) = cli(control.grpc, &["proxy-status"]).await;
    let strict_row = table.lines().find(|l| l.starts_with("strict")).unwrap();
    assert!(
        strict_row.contains("STALE") && strict_row.contains("rejected: "),
        "{table}"
    );

    // The lenient proxy serves the new routes, the strict one its last good version.
    assert_eq!(
        lenient.reviews(&[("end-user", "jason")]).await.unwrap(),
        "v1"
    );
    assert_eq!(
        strict.reviews(&[("end-user", "jason")]).await.unwrap(),
        "v2"
    );

    // A later version it can take brings it back in sync.
    apply(control.grpc, files.path(), "vs.yaml", ALL_TO_V2).await;
    converged(control.grpc, &["lenient", "strict"], &before).await;
    assert_eq!(strict.reviews(&[]).await.unwrap(), "v2");
}

/// Requests through the proxies, one after another, until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Load {
    fn start(targets: Vec<SocketAddr>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                for to in &targets {
                    match send(&c, "GET", *to, "reviews:9080", "/", &[]).await {
                        Ok(a) if a.status == 200 => {}
                        Ok(a) => failures.push(format!("{}: {}", a.status, a.text())),
                        Err(e) => failures.push(e),
                    }
                    sent2.fetch_add(1, Ordering::Relaxed);
                }
            }
            failures
        });
        Load { stop, sent, task }
    }

    /// Waits until `n` more requests have been sent.
    async fn wait_for(&self, n: u64) {
        let target = self.sent.load(Ordering::Relaxed) + n;
        let reached = poll_until(Duration::from_secs(30), || async {
            (self.sent.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
        assert!(reached.is_some(), "load stalled");
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.unwrap();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_while_the_control_plane_is_down_and_proxies_resync_when_it_returns() {
    let store = tempfile::tempdir().unwrap();
    let (mut control, _v1, _v2, files) = mesh(store.path()).await;
    apply(control.grpc, files.path(), "vs.yaml", JASON_TO_V2).await;
    let names = ["productpage-0", "productpage-1"];
    let a = Sidecar::start(control.grpc, names[0], &[]).await;
    let b = Sidecar::start(control.grpc, names[1], &[]).await;
    let before = converged(control.grpc, &names, &[]).await;
    let applied_before = (a.applied_versions().await, b.applied_versions().await);

    let load = Load::start(vec![a.outbound, b.outbound]);
    load.wait_for(100).await;
    control.weft.child.kill().unwrap();
    control.weft.wait_exit(DEADLINE).await;
    load.wait_for(500).await;

    // Back on the same address and directory: the proxies reconnect on their own, name the
    // version they hold, and are current without being sent anything.
    let ports = [control.grpc, free_addrs::<1>()[0]];
    let control = Control::start(store.path(), ports).await;
    let after = converged(control.grpc, &names, &[]).await;
    assert_eq!(after, before);
    assert_eq!(
        (a.applied_versions().await, b.applied_versions().await),
        applied_before,
        "a proxy holding the current version recompiled after reconnecting"
    );
    load.wait_for(100).await;

    apply(control.grpc, files.path(), "vs.yaml", ALL_TO_V2).await;
    converged(control.grpc, &names, &before).await;
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(a.reviews(&[]).await.unwrap(), "v2");
    assert_eq!(b.reviews(&[]).await.unwrap(), "v2");
    drop((a.weft, b.weft));
}

fn workload_entries(n: usize, version: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: bulk-{i}\nspec:\n  address: 10.9.{}.{}\n  labels: {{app: bulk, version: {version}}}\n",
                i / 250,
                i % 250
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn stored_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| weft_api::load::is_config_file(p))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_mid_apply_leaves_the_config_directory_intact() {
    const N: usize = 2000;
    let store = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let ports = free_addrs::<2>();
    let mut control = Control::start(store.path(), ports).await;
    apply(
        control.grpc,
        files.path(),
        "v1.yaml",
        &workload_entries(N, "v1"),
    )
    .await;
    assert_eq!(stored_files(store.path()).len(), N);

    // Rewrite every object, and kill the control plane part way through.
    let v2 = files.path().join("v2.yaml");
    std::fs::write(&v2, workload_entries(N, "v2")).unwrap();
    let mut applying = Weft::spawn(&[
        "--control-plane".into(),
        format!("http://{}", control.grpc),
        "apply".into(),
        "-f".into(),
        v2.display().to_string(),
    ]);
    let rewritten = |dir: &Path| {
        stored_files(dir)
            .iter()
            .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("version: v2")))
            .count()
    };
    let midway = poll_until(Duration::from_secs(60), || {
        std::future::ready((rewritten(store.path()) >= 50).then_some(()))
    })
    .await;
    control.weft.child.kill().unwrap();
    control.weft.wait_exit(DEADLINE).await;
    assert!(
        midway.is_some(),
        "the apply never got going\n{}",
        applying.output()
    );
    applying.wait_exit(DEADLINE).await;

    // Every object is still there, each either wholly old or wholly new.
    let loaded = weft_api::load_path(store.path()).unwrap();
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.resources.len(), N);
    let done = rewritten(store.path());
    assert!(
        (50..N).contains(&done),
        "{done} of {N} rewritten: the kill came too late to test anything"
    );

    // A restarted control plane serves exactly that, and the apply can simply be repeated.
    let control = Control::start(store.path(), ports).await;
    let (_, out, _) = cli(control.grpc, &["get", "we", "-o", "json"]).await;
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), N);
    apply(
        control.grpc,
        files.path(),
        "v2.yaml",
        &workload_entries(N, "v2"),
    )
    .await;
    assert_eq!(rewritten(store.path()), N);
    let leftovers: Vec<_> = std::fs::read_dir(store.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

const MISSING_SUBSET: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v4
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_applies_gets_and_deletes_and_refuses_bad_or_stale_updates() {
    let store = tempfile::tempdir().unwrap();
    let (control, _v1, _v2, files) = mesh(store.path()).await;
    let cp = control.grpc;

    // Rejected with the analyzer's words, and nothing is stored.
    let bad = files.path().join("bad.yaml");
    std::fs::write(&bad, MISSING_SUBSET).unwrap();
    let (status, _, err) = cli(cp, &["apply", "-f", &bad.display().to_string()]).await;
    assert!(!status.success());
    assert!(
        err.contains(r#"Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: "reviews+v4""#),
        "{err}"
    );
    assert!(!store
        .path()
        .join("default.virtualservice.reviews.yaml")
        .exists());

    // From standard input, as kubectl takes it.
    let mut stdin_apply = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "--control-plane",
            &format!("http://{cp}"),
            "apply",
            "-f",
            "-",
        ])
        .env("WEFT_HOME", test_home())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    stdin_apply
        .stdin
        .take()
        .unwrap()
        .write_all(JASON_TO_V2.as_bytes())
        .unwrap();
    let out = stdin_apply.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "virtualservice.networking.istio.io/reviews created\n"
    );

    // An update carrying the version it was built on goes through once; built on a stale
    // one, it is refused and says what to do.
    let (_, yaml, _) = cli(cp, &["get", "vs", "reviews", "-o", "yaml"]).await;
    assert!(yaml.contains("resourceVersion:"), "{yaml}");
    let edited = files.path().join("edited.yaml");
    std::fs::write(&edited, yaml.replace("subset: v2", "subset: v1")).unwrap();
    let edited = edited.display().to_string();
    let (status, out, err) = cli(cp, &["apply", "-f", &edited]).await;
    assert!(status.success(), "{err}");
    assert_eq!(
        out,
        "virtualservice.networking.istio.io/reviews configured\n"
    );
    let (status, _, err) = cli(cp, &["apply", "-f", &edited]).await;
    assert!(!status.success());
    assert!(
        err.contains("the object has been modified")
            && err.contains("weft get VirtualService reviews -n default -o yaml"),
        "{err}"
    );

    let (_, table, _) = cli(cp, &["get", "virtualservices"]).await;
    assert!(table.starts_with("NAME"), "{table}");
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("reviews ") && row.contains("[reviews]"),
        "{table}"
    );
    let (status, _, err) = cli(cp, &["analyze"]).await;
    assert!(status.success(), "{err}");
    assert!(err.contains("✔ No validation issues found when analyzing namespace: default."));

    let (status, out, _) = cli(cp, &["delete", "vs", "reviews"]).await;
    assert!(status.success());
    assert_eq!(
        out,
        "virtualservice.networking.istio.io \"reviews\" deleted\n"
    );
    let (status, _, err) = cli(cp, &["delete", "vs", "reviews"]).await;
    assert!(!status.success());
    assert!(
        err.contains("VirtualService default/reviews not found"),
        "{err}"
    );
    assert!(!store
        .path()
        .join("default.virtualservice.reviews.yaml")
        .exists());

    let (_, version, _) = cli(cp, &["version"]).await;
    assert!(
        version.contains("control plane version: ") && version.contains("(0 proxies)"),
        "{version}"
    );
    let (status, completions, _) = run_weft(&["completions".into(), "bash".into()]).await;
    assert!(status.success() && completions.contains("proxy-status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_is_ready_only_once_configured_and_finds_a_control_plane_that_starts_late() {
    let ports = free_addrs::<2>();
    let addrs = free_addrs::<4>();
    let health = addrs[3];
    let args = proxy_args(ports[0], "early", addrs);
    let proxy = Weft::spawn(&args);
    let c = client();
    let answering = poll_until(DEADLINE, || async {
        send(&c, "GET", health, "localhost", "/healthz/ready", &[])
            .await
            .ok()
            .map(|a| a.status)
    })
    .await;
    assert_eq!(
        answering,
        Some(http::StatusCode::SERVICE_UNAVAILABLE),
        "{}",
        proxy.output()
    );

    let store = tempfile::tempdir().unwrap();
    let control = Control::start(store.path(), ports).await;
    converged(control.grpc, &["early"], &[]).await;
    let ready = send(&c, "GET", health, "localhost", "/healthz/ready", &[]).await;
    assert_eq!(ready.unwrap().status, 200);
    assert!(
        proxy.stderr().contains("cannot reach the control plane"),
        "{}",
        proxy.output()
    );
}

/// A restarted proxy whose control plane is away: a connection made before its first config
/// is held (the listener is not served yet, as Envoy warms a listener), not answered 502
/// BlackHoleCluster from an empty registry; once config arrives it is routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_before_the_first_config_waits_for_it_and_is_routed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = tempfile::tempdir().unwrap();
    let (mut control, _v1, _v2, files) = mesh(store.path()).await;
    apply(control.grpc, files.path(), "vs.yaml", ALL_TO_V2).await;
    control.weft.child.kill().unwrap();
    control.weft.wait_exit(DEADLINE).await;

    let addrs = free_addrs::<4>();
    let [outbound, _, _, health] = addrs;
    let proxy = Weft::spawn(&proxy_args(control.grpc, "restarted", addrs));
    let c = client();
    let unready = poll_until(DEADLINE, || async {
        let a = send(&c, "GET", health, "localhost", "/healthz/ready", &[]).await;
        a.ok().filter(|a| a.status == 503)
    })
    .await;
    assert!(unready.is_some(), "{}", proxy.output());
    let mut app = tokio::net::TcpStream::connect(outbound).await.unwrap();
    app.write_all(b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();

    let control = Control::start(store.path(), [control.grpc, free_addrs::<1>()[0]]).await;
    converged(control.grpc, &["restarted"], &[]).await;
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, app.read_to_end(&mut answer))
        .await
        .expect("answered once configured")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("x-served-by: v2"),
        "{answer}\n{}",
        proxy.output()
    );
}

/// The CLI run as another user of the machine would: no published credentials.
async fn cli_elsewhere(control: String, args: &[&str]) -> (ExitStatus, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let home = tempfile::tempdir().unwrap();
        std::process::Command::new(WEFT)
            .arg("--control-plane")
            .arg(control)
            .args(&args)
            .env("WEFT_HOME", home.path())
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_TOKEN_FILE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_mesh_needs_the_admin_token_which_the_local_cli_finds_by_itself() {
    use std::os::unix::fs::PermissionsExt;
    let store = tempfile::tempdir().unwrap();
    let control = Control::start(store.path(), free_addrs::<2>()).await;
    let cp = control.grpc;
    let files = tempfile::tempdir().unwrap();
    let vs = files.path().join("svc.yaml");
    std::fs::write(&vs, "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {ports: [{name: http, port: 9080}]}\n").unwrap();
    let vs = vs.display().to_string();
    let token_file = store.path().join(".weft/admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin token is its user's alone");

    // Without the token: refused, saying where the token is; nothing stored.
    for args in [
        vec!["apply", "-f", vs.as_str()],
        vec!["delete", "svc", "reviews"],
        vec!["get", "svc"],
    ] {
        let (status, _, err) = cli_elsewhere(format!("http://{cp}"), &args).await;
        assert!(!status.success(), "{args:?} went through without a token");
        assert!(
            err.contains("needs its admin token")
                && err.contains(&token_file.display().to_string()),
            "{args:?}: {err}"
        );
    }
    let (status, _, err) = cli_elsewhere(
        format!("http://{cp}"),
        &["--token", "0123abcd", "apply", "-f", &vs],
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("is not this control plane's"), "{err}");
    assert!(stored_files(store.path()).is_empty());

    // The same user's CLI finds it without flags; another set-up passes the file.
    let (status, out, err) = cli(cp, &["apply", "-f", &vs]).await;
    assert!(status.success(), "{err}");
    assert!(out.contains("reviews created"), "{out}");
    assert_eq!(stored_files(store.path()).len(), 1);
    let token = token_file.display().to_string();
    let (status, out, err) = cli_elsewhere(
        format!("http://{cp}"),
        &["--token-file", &token, "delete", "svc", "reviews"],
    )
    .await;
    assert!(status.success(), "{err}");
    assert!(out.contains("deleted"), "{out}");

    // The token survives a restart, so CLIs that hold it keep working.
    let before = std::fs::read_to_string(&token_file).unwrap();
    drop(control);
    let _control = Control::start(store.path(), free_addrs::<2>()).await;
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_the_tls_port_with_the_admin_identity_it_finds_by_itself() {
    let store = tempfile::tempdir().unwrap();
    let [tls, monitoring] = free_addrs::<2>();
    // No --grpc: only the TLS port serves discovery and the admin API.
    let mut weft = Weft::spawn(
        &[
            "control",
            "--config-dir",
            &store.path().display().to_string(),
            "--grpc-tls",
            &tls.to_string(),
            "--monitoring",
            &monitoring.to_string(),
            "--no-dashboard",
        ]
        .map(String::from),
    );
    assert!(
        answers_ok(&mut weft, monitoring, "/ready").await,
        "{}",
        weft.output()
    );
    let files = tempfile::tempdir().unwrap();
    let svc = files.path().join("svc.yaml");
    std::fs::write(&svc, "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {ports: [{name: http, port: 9080}]}\n").unwrap();
    let svc = svc.display().to_string();

    // The same user's CLI: a bare address is the TLS port, the credential is published.
    let (status, out, err) = run_weft(&[
        "--control-plane".into(),
        tls.to_string(),
        "apply".into(),
        "-f".into(),
        svc.clone(),
    ])
    .await;
    assert!(status.success(), "{err}");
    assert!(out.contains("reviews created"), "{out}");

    // Elsewhere: no credential, saying where it is; a copy of the file works.
    let (status, _, err) = cli_elsewhere(tls.to_string(), &["get", "svc"]).await;
    assert!(!status.success());
    assert!(
        err.contains("no admin credential") && err.contains("--admin-cert"),
        "{err}"
    );
    let credential = store.path().join(".weft/admin.pem").display().to_string();
    let (status, out, err) = cli_elsewhere(
        tls.to_string(),
        &["--admin-cert", &credential, "get", "svc"],
    )
    .await;
    assert!(status.success(), "{err}");
    assert!(out.contains("reviews"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_and_nothing_outside_the_config_directory_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("app.yaml"), "precious").unwrap();
    let store = tmp.path().join("config");
    let control = Control::start(&store, free_addrs::<2>()).await;
    let cp = control.grpc;
    let vs = |name: &str, namespace: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name:?}\n  namespace: {namespace:?}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews}}\n")
    };
    for (name, namespace, field) in [
        ("app", "../victim/app", "metadata.namespace"),
        ("app", "..", "metadata.namespace"),
        ("../../victim/app", "default", "metadata.name"),
        ("a/b", "default", "metadata.name"),
        ("%2fetc%2fpasswd", "default", "metadata.name"),
        ("Reviews", "default", "metadata.name"),
        ("révieẃs", "default", "metadata.name"),
    ] {
        let file = tmp.path().join("hostile.yaml");
        std::fs::write(&file, vs(name, namespace)).unwrap();
        let (status, _, err) = cli(cp, &["apply", "-f", &file.display().to_string()]).await;
        assert!(!status.success(), "{namespace}/{name} applied");
        assert!(err.contains(field) && err.contains("RFC 1123"), "{err}");
        let (status, _, _) = cli(cp, &["delete", "vs", name, "-n", namespace]).await;
        assert!(!status.success(), "delete {namespace}/{name} went through");
    }
    assert_eq!(
        std::fs::read_to_string(victim.join("app.yaml")).unwrap(),
        "precious"
    );
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    let stored: Vec<_> = stored_files(&store);
    assert!(stored.is_empty(), "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_field_istio_does_not_know_and_stores_nothing() {
    let store = tempfile::tempdir().unwrap();
    let control = Control::start(store.path(), free_addrs::<2>()).await;
    let files = tempfile::tempdir().unwrap();
    let typo = files.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  ports: [{name: http, port: 9080}]\n  selecter: {app: reviews}\n",
    )
    .unwrap();
    let (status, out, err) = cli(control.grpc, &["apply", "-f", &typo.display().to_string()]).await;
    assert!(!status.success(), "{out}");
    assert!(
        !out.contains("configured") && !out.contains("created"),
        "{out}"
    );
    assert!(
        err.contains("spec.selecter: unknown field") && err.contains("nothing was applied"),
        "{err}"
    );
    assert!(stored_files(store.path()).is_empty());
}

/// Created after `reviews` (with its subsets) but sorting before it by name: Istio merges
/// it into `reviews`, adding its connection pool; its own `v2` is ignored.
const CIRCUIT_BREAKER: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: circuit-breaker
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 7
  subsets:
  - name: v2
    labels:
      version: v1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_destination_rule_for_a_host_is_merged_as_istio_merges_it() {
    let store = tempfile::tempdir().unwrap();
    let (control, _v1, _v2, files) = mesh(store.path()).await;
    apply(control.grpc, files.path(), "vs.yaml", JASON_TO_V2).await;
    let proxy = Sidecar::start(control.grpc, "productpage-0", &[]).await;
    let before = converged(control.grpc, &["productpage-0"], &[]).await;
    let pool = files.path().join("pool.yaml");
    std::fs::write(&pool, CIRCUIT_BREAKER).unwrap();
    let (status, _, err) = cli(control.grpc, &["apply", "-f", &pool.display().to_string()]).await;
    assert!(status.success(), "{err}");
    assert!(
        err.contains("WEFT0005")
            && err.contains("subset v2 is ignored because default/reviews already defines it"),
        "{err}"
    );
    converged(control.grpc, &["productpage-0"], &before).await;

    // Both subsets still route (not 503 NC), each to its own version.
    for _ in 0..5 {
        assert_eq!(
            proxy.reviews(&[("end-user", "jason")]).await.as_deref(),
            Ok("v2")
        );
        assert_eq!(proxy.reviews(&[]).await.as_deref(), Ok("v1"));
    }
    // The proxy's own dump shows the rules in force and the pool the second one added.
    let dump = send(
        &client(),
        "GET",
        proxy.admin,
        "localhost",
        "/config_dump",
        &[],
    )
    .await
    .unwrap();
    let dump: Value = serde_json::from_slice(&dump.body).unwrap();
    let v2 = dump["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["subset"] == "v2")
        .expect("the v2 cluster");
    assert_eq!(
        v2["destinationRules"],
        serde_json::json!([
            "DestinationRule default/reviews",
            "DestinationRule default/circuit-breaker"
        ])
    );
    assert_eq!(v2["limits"]["max_connections"], 7, "{v2}");

    let (_, clusters, _) = cli(control.grpc, &["proxy-config", "clusters", "productpage-0"]).await;
    let row = clusters
        .lines()
        .find(|l| l.contains(" v2 "))
        .unwrap_or_else(|| panic!("{clusters}"));
    assert!(
        row.contains("reviews.default+circuit-breaker.default"),
        "{clusters}"
    );
    let (_, described, _) = cli(control.grpc, &["describe", "service", "reviews"]).await;
    assert!(
        described.contains("DestinationRule: reviews.default + circuit-breaker.default")
            && described.contains("Ignored: subset v2 of default/circuit-breaker"),
        "{described}"
    );
    let (_, analysis, _) = cli(control.grpc, &["analyze"]).await;
    assert!(
        analysis.contains("Warning [WEFT0005] (DestinationRule default/circuit-breaker)"),
        "{analysis}"
    );
}

/// A VirtualService whose weight is not a number, as a hand edit might leave it.
const BAD_WEIGHT_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: lots
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_broken_at_start_is_named_and_the_control_plane_is_not_ready_until_it_is_fixed() {
    let store = tempfile::tempdir().unwrap();
    std::fs::write(
        store.path().join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {ports: [{name: http, port: 9080}]}\n",
    )
    .unwrap();
    let bad = store.path().join("vs.yaml");
    std::fs::write(&bad, BAD_WEIGHT_VS).unwrap();
    let [grpc, monitoring] = free_addrs::<2>();
    let _control = Control::spawn(store.path(), [grpc, monitoring]);
    let c = client();
    let ready = |want: u16| {
        let c = &c;
        async move {
            poll_until(DEADLINE, || async {
                let a = send(c, "GET", monitoring, "localhost", "/ready", &[])
                    .await
                    .ok()?;
                (a.status == want).then(|| a.text())
            })
            .await
        }
    };
    let why = ready(503)
        .await
        .expect("/ready refuses while vs.yaml's objects are missing");
    assert!(
        why.contains(&bad.display().to_string())
            && why.contains("VirtualService default/reviews")
            && why.contains("spec.http[0].route[0].weight")
            && why.contains("none of its objects are served"),
        "{why}"
    );
    let metrics = send(&c, "GET", monitoring, "localhost", "/metrics", &[])
        .await
        .unwrap();
    let text = metrics.text();
    assert!(
        text.contains("weft_control_config_files_invalid 1"),
        "{text}"
    );
    // istiod's names and format: pushes by xDS type, counters without `_total`, no `# EOF`.
    assert!(
        text.contains("pilot_xds_pushes{type=\"eds\"} ")
            && text.contains("# TYPE pilot_xds_pushes counter")
            && text.contains("istio_build{component=\"pilot\",tag=\"")
            && !text.contains("_total")
            && !text.contains("# EOF"),
        "{text}"
    );
    let (status, out, _) = cli(grpc, &["analyze"]).await;
    assert!(!status.success());
    assert!(
        out.contains("IST0106") && out.contains("spec.http[0].route[0].weight"),
        "{out}"
    );
    let (_, _, err) = cli(grpc, &["proxy-status"]).await;
    assert!(err.contains("vs.yaml does not load"), "{err}");

    // Fixed: ready. Broken again while running: its last good objects keep serving, and
    // the problem is still reported.
    std::fs::write(&bad, BAD_WEIGHT_VS.replace("weight: lots", "weight: 100")).unwrap();
    assert_eq!(ready(200).await.as_deref(), Some("ready\n"));
    std::fs::write(&bad, BAD_WEIGHT_VS).unwrap();
    let detail = poll_until(DEADLINE, || async {
        let a = send(&c, "GET", monitoring, "localhost", "/ready", &[])
            .await
            .ok()?;
        (a.status == 200 && a.text().contains("last good objects are still served"))
            .then(|| a.text())
    })
    .await;
    assert!(
        detail.is_some(),
        "the runtime breakage is not reported on /ready"
    );
    let (_, vs, _) = cli(grpc, &["get", "vs", "reviews", "-o", "yaml"]).await;
    assert!(vs.contains("weight: 100"), "{vs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_document_is_refused_at_once_and_the_control_plane_keeps_serving() {
    let store = tempfile::tempdir().unwrap();
    let (control, _v1, _v2, files) = mesh(store.path()).await;
    let _proxy = Sidecar::start(control.grpc, "productpage-0", &[]).await;
    let before = converged(control.grpc, &["productpage-0"], &[]).await;
    // 400 KB nested 100,000 levels: libyaml alone spent 29 s of CPU on it.
    let deep = files.path().join("deep.yaml");
    std::fs::write(
        &deep,
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: deep}}\nspec: {{ports: {}{}}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .unwrap();
    let (status, _, err) = cli(control.grpc, &["apply", "-f", &deep.display().to_string()]).await;
    assert!(!status.success());
    assert!(err.contains("nested deeper than 100 levels"), "{err}");
    // The proxy's stream is intact and it still holds the same version.
    let after = converged(control.grpc, &["productpage-0"], &[]).await;
    assert_eq!(before, after);
    let ready = send(
        &client(),
        "GET",
        control.monitoring,
        "localhost",
        "/ready",
        &[],
    )
    .await;
    assert_eq!(ready.map(|a| a.status.as_u16()), Ok(200));
}

/// `weft control --webhook` on free ports, once ready, and the webhook's address.
async fn injecting_control(dir: &Path, extra: &[&str]) -> (Weft, SocketAddr) {
    let [monitoring, webhook] = free_addrs::<2>();
    let mut args: Vec<String> = [
        "control",
        "--config-dir",
        &dir.display().to_string(),
        "--monitoring",
        &monitoring.to_string(),
        "--grpc-tls",
        "127.0.0.1:0",
        "--no-dashboard",
        "--webhook",
        &webhook.to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut weft = Weft::spawn(&args);
    assert!(
        answers_ok(&mut weft, monitoring, "/ready").await,
        "{}",
        weft.output()
    );
    (weft, webhook)
}

/// The webhook's answer to `review`, posted over TLS as the API server posts it: to the
/// Service's name, trusting the mesh root (the webhook's caBundle).
async fn review_over_tls(weft: &Weft, dir: &Path, webhook: SocketAddr, review: &Value) -> Value {
    let body = dir.join("review.json");
    std::fs::write(&body, review.to_string()).unwrap();
    let root = dir.join(".weft/ca/root-cert.pem");
    let port = webhook.port();
    poll_until(Duration::from_secs(10), || async {
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "-m",
                "5",
                "-H",
                "content-type: application/json",
            ])
            .arg("--cacert")
            .arg(&root)
            .arg("--resolve")
            .arg(format!("istiod.istio-system.svc:{port}:127.0.0.1"))
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(format!("https://istiod.istio-system.svc:{port}/inject"))
            .output()
            .await
            .expect("curl (Debian's curl package) calls the webhook as the API server does");
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    })
    .await
    .unwrap_or_else(|| panic!("the webhook never answered\n{}", weft.output()))
}

/// The answer's JSONPatch, if it has one.
fn patch_of(answered: &Value) -> Option<json_patch::Patch> {
    let encoded = answered["response"]["patch"].as_str()?;
    let patch =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
    Some(serde_json::from_slice(&patch).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injection_webhook_answers_the_api_servers_review_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (weft, webhook) = injecting_control(
        dir.path(),
        &["--inject-image", "registry.example/weft:test"],
    )
    .await;
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web"}]},
            },
        },
    });
    let answered = review_over_tls(&weft, dir.path(), webhook, &review).await;
    assert_eq!(answered["response"]["uid"], "u1");
    assert_eq!(answered["response"]["patchType"], "JSONPatch");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&answered).expect("a patch")).unwrap();
    assert_eq!(
        pod["spec"]["initContainers"][1]["image"],
        "registry.example/weft:test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_patch_makes_istios_golden_pods_of_the_admission_review_fixtures() {
    use weft_kube::inject::golden;
    let dir = tempfile::tempdir().unwrap();
    let (weft, webhook) = injecting_control(dir.path(), &[]).await;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../weft-kube/testdata/admission");
    // Each review, Istio's injection of the same pod, and whether it gets a sidecar.
    for (fixture, golden_file, injected) in [
        ("hello.json", "hello.yaml.injected", true),
        ("hello-ignore.json", "hello-ignore.yaml.injected", false),
    ] {
        let path = fixtures.join(fixture);
        let review: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let answered = review_over_tls(&weft, dir.path(), webhook, &review).await;
        let response = &answered["response"];
        assert_eq!(answered["kind"], "AdmissionReview", "{fixture}");
        assert_eq!(response["uid"], review["request"]["uid"], "{fixture}");
        assert_eq!(response["allowed"], true, "{fixture}");
        let mut pod = review["request"]["object"].clone();
        let patch = patch_of(&answered);
        assert_eq!(patch.is_some(), injected, "{fixture}: {answered}");
        if let Some(patch) = &patch {
            assert_eq!(response["patchType"], "JSONPatch", "{fixture}");
            json_patch::patch(&mut pod, patch).unwrap();
        }
        // The ReplicaSet's hash is the one label the Deployment's template does not have.
        assert!(pod["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("pod-template-hash")
            .is_some());
        let istios = golden::template(golden_file);
        if injected {
            golden::assert_istios_shape(&pod, &istios);
        } else {
            for part in ["labels", "annotations"] {
                assert_eq!(pod["metadata"][part], istios["metadata"][part], "{fixture}");
            }
            assert_eq!(golden::apps(&pod), golden::apps(&istios), "{fixture}");
            assert_eq!(pod["spec"]["initContainers"], Value::Null, "{fixture}");
        }
    }
}

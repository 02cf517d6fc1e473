//! End-to-end tests of the real `weft` binary: real processes, real sockets on 127.0.0.x.
//!
//! Nothing here sleeps to wait for something to happen: every wait polls a condition (the
//! health port, the admin `/config_dump`, the child's output, its exit) against a deadline,
//! and every child process is killed when its guard drops, even when a test panics.

mod support;

use http::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;
use support::*;

// ---------------------------------------------------------------------------------------------
// A running proxy
// ---------------------------------------------------------------------------------------------

fn proxy_args(config: &Path, [outbound, inbound, admin, health]: [SocketAddr; 4]) -> Vec<String> {
    vec![
        "proxy".into(),
        "--config".into(),
        config.display().to_string(),
        "--outbound".into(),
        outbound.to_string(),
        "--inbound".into(),
        inbound.to_string(),
        "--admin".into(),
        admin.to_string(),
        "--health".into(),
        health.to_string(),
        // Any free port: several proxies run at once.
        "--stats".into(),
        "127.0.0.1:0".into(),
        "--envoy-stats".into(),
        "127.0.0.1:0".into(),
        "--no-capture".into(),
    ]
}

struct RunningProxy {
    weft: Weft,
    config: tempfile::TempDir,
    outbound: SocketAddr,
    admin: SocketAddr,
    client: HttpClient,
}

impl RunningProxy {
    /// Starts `weft proxy` on free ports and waits until its health port says ready. A port
    /// taken by someone else between choosing and binding it is retried with new ports.
    async fn start(config: tempfile::TempDir) -> RunningProxy {
        RunningProxy::start_with(config, &[]).await
    }

    async fn start_with(config: tempfile::TempDir, extra: &[&str]) -> RunningProxy {
        let client = client();
        let mut last = String::new();
        for _attempt in 0..3 {
            let addrs = free_addrs::<4>();
            let [outbound, _, admin, health] = addrs;
            let mut args = proxy_args(config.path(), addrs);
            args.extend(extra.iter().map(|a| a.to_string()));
            let mut weft = Weft::spawn(&args);
            let ready = poll_until(Duration::from_secs(20), || {
                let client = &client;
                let exited = weft.exited();
                async move {
                    if let Some(status) = exited {
                        return Some(Err(status));
                    }
                    match send(client, "GET", health, "localhost", "/healthz/ready", &[]).await {
                        Ok(a) if a.status == StatusCode::OK => Some(Ok(())),
                        _ => None,
                    }
                }
            })
            .await;
            match ready {
                Some(Ok(())) => {
                    return RunningProxy {
                        weft,
                        config,
                        outbound,
                        admin,
                        client,
                    }
                }
                Some(Err(status)) => {
                    weft.wait_exit(DEADLINE).await;
                    last = format!("exited with {status}\n{}", weft.output());
                    if !weft.stderr().contains("cannot listen") {
                        break;
                    }
                }
                None => panic!(
                    "weft proxy not ready (GET {health}/healthz/ready != 200) within 20s\n{}",
                    weft.output()
                ),
            }
        }
        panic!("weft proxy did not start: {last}");
    }

    /// Writes a config file atomically (a hidden temp name, then rename) so the watcher never
    /// reads half of it.
    fn write(&self, name: &str, text: &str) {
        write_config(self.config.path(), name, text);
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        send(
            &self.client,
            "GET",
            self.outbound,
            "reviews:9080",
            path,
            headers,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.weft.output()))
    }

    async fn config_dump(&self) -> Result<Value, String> {
        let a = send(
            &self.client,
            "GET",
            self.admin,
            "localhost",
            "/config_dump",
            &[],
        )
        .await?;
        if a.status != StatusCode::OK {
            return Err(format!("/config_dump answered {}: {}", a.status, a.text()));
        }
        serde_json::from_slice(&a.body).map_err(|e| format!("/config_dump is not JSON: {e}"))
    }

    async fn status(&self) -> (u64, u64, Option<String>) {
        let dump = self
            .config_dump()
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.weft.output()));
        (
            dump["version"]
                .as_u64()
                .expect("config_dump has a numeric version"),
            dump["rejected"]
                .as_u64()
                .expect("config_dump has a numeric rejected"),
            dump["lastError"].as_str().map(str::to_string),
        )
    }

    /// Polls `/config_dump` until `done(version, rejected)`; returns the status then.
    async fn wait_for_status(
        &self,
        what: &str,
        done: impl Fn(u64, u64) -> bool,
    ) -> (u64, u64, Option<String>) {
        let last = Mutex::new(None);
        let got = poll_until(DEADLINE, || async {
            let s = self.status().await;
            *last.lock().unwrap() = Some(s.clone());
            done(s.0, s.1).then_some(s)
        })
        .await;
        got.unwrap_or_else(|| {
            panic!(
                "config_dump never showed {what} within {DEADLINE:?}; \
                 last (version, rejected, lastError): {:?}\n{}",
                last.lock().unwrap(),
                self.weft.output()
            )
        })
    }

    /// Waits for a line of the proxy's stdout that contains every one of `parts`.
    async fn wait_for_log_line(&self, parts: &[&str]) -> String {
        let found = poll_until(DEADLINE, || {
            let out = self.weft.stdout();
            std::future::ready(
                out.lines()
                    .find(|l| parts.iter().all(|p| l.contains(p)))
                    .map(str::to_string),
            )
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "no access-log line containing all of {parts:?} within {DEADLINE:?}\n{}",
                self.weft.output()
            )
        })
    }
}

fn write_config(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Bookinfo's reviews service
// ---------------------------------------------------------------------------------------------

const BAD_WEIGHT: &str = "apiVersion: networking.istio.io/v1
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
        subset: v1
      weight: lots
";

/// The reviews backends and a config directory that routes jason to v2, others to v1.
async fn bookinfo_reviews() -> (Backend, Backend, tempfile::TempDir) {
    let v1 = Backend::start("127.0.0.2", "v1").await;
    let v2 = Backend::start("127.0.0.3", "v2").await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "reviews-service.yaml", &service_yaml(&v1, &v2));
    write_config(
        dir.path(),
        "reviews-destination-rule.yaml",
        DESTINATION_RULE,
    );
    write_config(dir.path(), "reviews-virtual-service.yaml", JASON_TO_V2);
    (v1, v2, dir)
}

// ---------------------------------------------------------------------------------------------
// weft proxy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_routes_jason_to_v2_and_logs_each_request_to_stdout() {
    let (_v1, _v2, dir) = bookinfo_reviews().await;
    let proxy = RunningProxy::start(dir).await;

    for i in 0..5 {
        let jason = proxy
            .get(&format!("/reviews/{i}"), &[("end-user", "jason")])
            .await;
        assert_eq!(jason.status, StatusCode::OK, "{}", jason.text());
        assert_eq!(jason.served_by(), "v2", "jason, request {i}");
        let bob = proxy.get("/reviews/0", &[("end-user", "bob")]).await;
        assert_eq!(bob.status, StatusCode::OK, "{}", bob.text());
        assert_eq!(bob.served_by(), "v1", "bob, request {i}");
        let anonymous = proxy.get("/reviews/0", &[]).await;
        assert_eq!(anonymous.served_by(), "v1", "no end-user, request {i}");
    }

    let v2_line = proxy
        .wait_for_log_line(&[
            "\"GET /reviews/",
            "outbound|9080|v2|reviews.default.svc.cluster.local",
        ])
        .await;
    assert!(v2_line.contains(" 200 "), "{v2_line}");
    proxy
        .wait_for_log_line(&[
            "\"GET /reviews/0",
            "outbound|9080|v1|reviews.default.svc.cluster.local",
        ])
        .await;
    // Diagnostics go to stderr, so stdout is nothing but access-log lines.
    let stdout = proxy.weft.stdout();
    for line in stdout.lines() {
        assert!(
            line.starts_with('[') && line.contains("\"GET /"),
            "stdout holds something other than access-log lines: {line:?}\n{}",
            proxy.weft.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reloads_changed_files_and_keeps_serving_the_last_good_config() {
    let (_v1, _v2, dir) = bookinfo_reviews().await;
    let proxy = RunningProxy::start(dir).await;
    assert_eq!(proxy.get("/", &[]).await.served_by(), "v1");
    let (version, rejected, error) = proxy.status().await;
    assert!(version >= 1, "ready but version {version}");
    assert_eq!(error, None, "the initial config was rejected");

    // A good change is picked up by the file watcher.
    proxy.write("reviews-virtual-service.yaml", ALL_TO_V2);
    let (new_version, _, error) = proxy
        .wait_for_status("a new version", |v, _| v > version)
        .await;
    assert_eq!(error, None);
    for _ in 0..5 {
        let a = proxy.get("/", &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.served_by(), "v2", "everyone goes to v2 after the reload");
    }

    // A bad change is rejected with an error that says where, and traffic is unaffected.
    proxy.write("reviews-virtual-service.yaml", BAD_WEIGHT);
    let (after_version, after_rejected, error) = proxy
        .wait_for_status("a rejection", |_, r| r > rejected)
        .await;
    assert!(
        after_version >= new_version,
        "version went back from {new_version} to {after_version}"
    );
    let error = error.expect("lastError is set after a rejection");
    for needle in [
        "reviews-virtual-service.yaml",
        "VirtualService default/reviews",
        "spec.http[0].route[0].weight",
    ] {
        assert!(
            error.contains(needle),
            "lastError does not name {needle:?}: {error}"
        );
    }
    assert!(after_rejected > rejected);
    for _ in 0..5 {
        let a = proxy.get("/", &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.served_by(), "v2", "the last good config keeps serving");
    }
    let (version_now, _, _) = proxy.status().await;
    assert_eq!(
        version_now, after_version,
        "a rejected config must not change the version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_exits_with_status_zero() {
    let (_v1, _v2, dir) = bookinfo_reviews().await;
    let mut proxy = RunningProxy::start(dir).await;
    let a = send(
        &proxy.client,
        "POST",
        proxy.admin,
        "localhost",
        "/quitquitquit",
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", proxy.weft.output()));
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let status = proxy.weft.wait_exit(DEADLINE).await.unwrap_or_else(|| {
        panic!(
            "weft proxy still running {DEADLINE:?} after POST /quitquitquit\n{}",
            proxy.weft.output()
        )
    });
    assert!(
        status.success(),
        "exit status {status} after /quitquitquit\n{}",
        proxy.weft.output()
    );
}

/// Starts `weft proxy` with the `index`-th port (outbound, inbound, admin, health) already
/// taken; returns that address and the exit status and stderr. Retried when one of the other,
/// free ports is grabbed by someone else in the meantime.
async fn start_with_port_taken(config: &Path, index: usize) -> (SocketAddr, ExitStatus, String) {
    let mut last = String::new();
    for _attempt in 0..3 {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut addrs = free_addrs::<4>();
        addrs[index] = taken.local_addr().unwrap();
        let (status, _, stderr) = run_weft(&proxy_args(config, addrs)).await;
        drop(taken);
        let other_taken = addrs
            .iter()
            .enumerate()
            .any(|(i, a)| i != index && stderr.contains(&format!("cannot listen on {a} ")));
        if !other_taken {
            return (addrs[index], status, stderr);
        }
        last = stderr;
    }
    panic!("free ports kept being taken by someone else: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_fails_the_start_and_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "empty.yaml", "");
    for (index, role) in ["outbound", "inbound", "admin", "health"]
        .into_iter()
        .enumerate()
    {
        let (addr, status, stderr) = start_with_port_taken(dir.path(), index).await;
        assert!(
            !status.success(),
            "{role} port {addr} in use, yet exit status {status}\n{stderr}"
        );
        // The first error line says what could not listen where, and why.
        let first = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("no `error:` line on stderr: {stderr}"));
        assert!(
            first.contains(&format!("cannot listen on {addr} for {role}")),
            "the error does not name {addr} and the {role} port: {stderr}"
        );
        assert!(
            first.contains("Address already in use"),
            "the error does not say the address is in use: {stderr}"
        );
        assert!(
            first.contains("another process"),
            "the error does not say what to do: {stderr}"
        );
        assert!(
            !stderr.contains("panicked")
                && !stderr.contains("Stack backtrace")
                && !stderr.contains("Caused by"),
            "a port in use is a user error, not a crash: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// weft validate
// ---------------------------------------------------------------------------------------------

fn validate_args(path: &Path) -> Vec<String> {
    vec!["validate".into(), "-f".into(), path.display().to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, format!("{DESTINATION_RULE}---\n{JASON_TO_V2}")).unwrap();
    let (status, stdout, stderr) = run_weft(&validate_args(&file)).await;
    assert!(status.success(), "exit {status}\n{stdout}\n{stderr}");
    assert!(stdout.contains('✔'), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("2 resource(s)"), "stdout: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_rejects_a_bad_file_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, format!("{DESTINATION_RULE}---\n{BAD_WEIGHT}")).unwrap();
    let (status, stdout, stderr) = run_weft(&validate_args(&file)).await;
    assert!(!status.success(), "a bad file passed\n{stdout}\n{stderr}");
    assert!(!stdout.contains('✔'), "stdout: {stdout}");
    for needle in [
        file.display().to_string().as_str(),
        "document 2",
        "VirtualService default/reviews",
        "spec.http[0].route[0].weight",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr does not name {needle:?}: {stderr}"
        );
    }
}

/// `mach:` for `match:`: Istio's schema has no such field, and ignoring it would send
/// everyone to v2.
const TYPO: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - mach:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_analyze_refuse_a_misspelt_field_and_never_say_valid_over_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, TYPO).unwrap();
    let (status, stdout, stderr) = run_weft(&validate_args(&typo)).await;
    assert!(!status.success(), "{stdout}");
    assert!(!stdout.contains('✔'), "{stdout}");
    assert!(
        stderr.contains("spec.http[0].mach: unknown field")
            && stderr.contains("check its spelling"),
        "{stderr}"
    );
    let (status, stdout, _) =
        run_weft(&["analyze".into(), "-f".into(), typo.display().to_string()]).await;
    assert!(!status.success());
    assert!(
        stdout.contains("IST0106") && stdout.contains("spec.http[0].mach"),
        "{stdout}"
    );

    // Accepted, but with a warning that changes what it does: no tick.
    let ignored = dir.path().join("envoy-filter.yaml");
    std::fs::write(
        &ignored,
        format!("{DESTINATION_RULE}---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: custom}}\nspec: {{}}\n"),
    )
    .unwrap();
    let (status, stdout, stderr) = run_weft(&validate_args(&ignored)).await;
    assert!(status.success(), "{stderr}");
    assert!(
        !stdout.contains('✔') && stdout.contains("1 warning(s)"),
        "{stdout}"
    );
    assert!(stderr.contains("Weft does not implement yet"), "{stderr}");
    let (_, stdout, stderr) =
        run_weft(&["analyze".into(), "-f".into(), ignored.display().to_string()]).await;
    assert!(
        stdout.contains("WEFT0004") && !stderr.contains('✔'),
        "{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_accepts_every_bookinfo_networking_sample() {
    let samples: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/istio-samples/bookinfo/networking");
    let entries = std::fs::read_dir(&samples).unwrap_or_else(|e| {
        panic!(
            "cannot read Istio's Bookinfo samples at {}: {e}\n\
             this test needs istio-samples checked out at ../shared beside the repository",
            samples.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no files in {}: is istio-samples checked out completely?",
        samples.display()
    );
    // Istio's own validation warns of this one as well (its second route can never match).
    let known_warning = |file: &Path, stderr: &str| {
        file.ends_with("fault-injection-details-v1.yaml")
            && stderr.contains("virtualService rule #1 not used")
    };
    let mut failures = Vec::new();
    for file in &files {
        let (status, stdout, stderr) = run_weft(&validate_args(file)).await;
        if !status.success() || !(stdout.contains('✔') || known_warning(file, &stderr)) {
            failures.push(format!(
                "{}: exit {status}\n{stdout}{stderr}",
                file.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} Bookinfo samples failed `weft validate`:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_says_what_to_start_when_nothing_answers() {
    let [closed] = free_addrs::<1>();
    let (status, _, err) = run_weft(&[
        "dashboard".into(),
        "prometheus".into(),
        "--address".into(),
        closed.to_string(),
        "--browser=false".into(),
    ])
    .await;
    assert!(!status.success());
    assert!(
        err.contains(&format!("nothing answers at {closed}")) && err.contains("weft demo"),
        "{err}"
    );
}

/// `--access-log json`: one JSON object per line with Istio's field names (its
/// `accessLogEncoding: JSON`), numbers as numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_lines_carry_istios_field_names() {
    let (_v1, _v2, dir) = bookinfo_reviews().await;
    let proxy = RunningProxy::start_with(dir, &["--access-log", "json"]).await;
    let jason = proxy.get("/reviews/7", &[("end-user", "jason")]).await;
    assert_eq!(jason.status, StatusCode::OK, "{}", jason.text());
    let line = proxy
        .wait_for_log_line(&["outbound|9080|v2|reviews.default.svc.cluster.local"])
        .await;
    let entry: serde_json::Value = serde_json::from_str(&line).expect("one JSON object a line");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/reviews/7");
    assert_eq!(entry["response_code"], 200);
    assert_eq!(entry["response_flags"], "-");
    assert_eq!(entry["response_code_details"], "via_upstream");
    assert!(entry["duration"].is_u64() && entry["bytes_sent"].as_u64() > Some(0));
    assert!(entry["start_time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(entry["request_id"].is_string(), "{entry}");
}

/// MeshConfig's `accessLogFormat`, in Envoy's command operators: the line is written as
/// the format says, and a changed MeshConfig (JSON encoding, a JSON format) takes effect
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_config_access_log_format_shapes_each_line() {
    let (_v1, _v2, dir) = bookinfo_reviews().await;
    let mesh = |body: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{body}")
    };
    write_config(
        dir.path(),
        "mesh.yaml",
        &mesh("    accessLogFile: /dev/stdout\n    accessLogFormat: 'weft-text %REQ(:METHOD)% %REQ(:PATH)% user=%REQ(END-USER)% served=%RESP(X-SERVED-BY)% code=%RESPONSE_CODE% %UPSTREAM_CLUSTER:16%'\n"),
    );
    let proxy = RunningProxy::start_with(dir, &["--access-log", "off"]).await;
    let jason = proxy.get("/reviews/7", &[("end-user", "jason")]).await;
    assert_eq!(jason.status, StatusCode::OK, "{}", jason.text());
    let line = proxy.wait_for_log_line(&["weft-text"]).await;
    assert_eq!(
        line.trim_end(),
        "weft-text GET /reviews/7 user=jason served=v2 code=200 outbound|9080|v2"
    );

    proxy.write(
        "mesh.yaml",
        &mesh("    accessLogFile: /dev/stdout\n    accessLogEncoding: JSON\n    accessLogFormat: '{\"kind\": \"weft-json\", \"code\": \"%RESPONSE_CODE%\", \"user\": \"%REQ(END-USER)%\", \"path\": \"%REQ(:PATH)%\"}'\n"),
    );
    let line = poll_until(Duration::from_secs(10), || async {
        let bob = proxy.get("/reviews/8", &[("end-user", "bob")]).await;
        assert_eq!(bob.status, StatusCode::OK);
        proxy
            .weft
            .stdout()
            .lines()
            .find(|l| l.contains("weft-json") && l.contains("/reviews/8"))
            .map(str::to_string)
    })
    .await
    .expect("a JSON line after MeshConfig changed");
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["code"], 200);
    assert_eq!(entry["user"], "bob");
    assert_eq!(entry.as_object().unwrap().len(), 4, "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_inject_gives_bookinfo_sidecars_whose_arguments_weft_proxy_takes() {
    let bookinfo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/istio-samples/bookinfo/platform/bookinfo.yaml"
    );
    let (status, out, err) = run_weft(&["kube-inject".into(), "-f".into(), bookinfo.into()]).await;
    assert!(status.success(), "{err}");
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let proxies: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .filter_map(|d| {
            d["spec"]["template"]["spec"]["initContainers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "istio-proxy")
        })
        .collect();
    assert_eq!(proxies.len(), 6, "{out}");
    // The sidecar's arguments are weft proxy's: it gets as far as the files the pod would
    // have mounted (its labels, its identity token).
    let args: Vec<String> = proxies[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let (status, _, err) = run_weft(&args).await;
    assert!(!status.success());
    assert!(
        (err.contains("/etc/istio/pod/") || err.contains("/var/run/secrets/"))
            && !err.contains("unexpected argument"),
        "{err}"
    );
}

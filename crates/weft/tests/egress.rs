//! Egress on the local platform (`weft up`): "external" hosts are `sidecar: false` pods in
//! namespace `external`, named by `hostnames` that every pod resolves, as hosts on the
//! internet are named by public DNS. A mesh client calls them in a loop (`weft probe call`,
//! one JSON line per attempt in its log) while the test changes the config: blocked by the
//! default REGISTRY_ONLY, then allowed by ServiceEntries (DNS, STATIC, NONE; HTTP by Host,
//! TLS by SNI, TCP by address and port), then limited by a VirtualService timeout on the
//! external host, then ALLOW_ANY by a Sidecar for an address nothing declares.
//!
//! There the TLS endpoint is a TCP echo server, and the client sends a real ClientHello
//! naming the host. The sidecar routes it by SNI without terminating it, so what comes back
//! is the client's own handshake record.
//!
//! Istio's mutual TLS origination runs on the demo (`tests/bookinfo.rs`).

mod support;

use serde_json::Value;
use std::time::Duration;
use support::local_mesh::{all_ready, Up};
use support::*;

/// Pods are planned in (namespace, name) order: default/client, external/api, external/raw.
const CLIENT_IP: &str = "10.44.0.2";
const API_IP: &str = "10.44.0.3";
const RAW_IP: &str = "10.44.0.4";

const API: &str = "http://api.external.test:8080/";
const SLOW: &str = "http://api.external.test:8080/slow?delay_ms=3000";
/// A service address only a STATIC ServiceEntry gives meaning to (TEST-NET-1).
const BY_VIP: &str = "http://192.0.2.10:8080/by-vip";
const TLS: &str = "tls://secure.external.test:9443";
const TCP: &str = "tcp://10.44.0.4:9000";
/// The external server by an address no ServiceEntry declares.
const UNDECLARED: &str = "http://10.44.0.3:8080/undeclared";

fn mesh_file() -> String {
    format!(
        r#"apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: api, namespace: external}}
spec:
  sidecar: false
  hostnames: [api.external.test]
  command: [weft, echo, --name, api, --listen, "0.0.0.0:8080"]
  ports: [8080]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: raw, namespace: external}}
spec:
  sidecar: false
  hostnames: [secure.external.test]
  command: [weft, probe, tcp-echo, --listen, "0.0.0.0:9000", --listen, "0.0.0.0:9443"]
  ports: [9000, 9443]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: client}}
spec:
  labels: {{app: client}}
  command: [weft, probe, call, "{API}", "{SLOW}", "{BY_VIP}", "{TLS}", "{TCP}", "{UNDECLARED}"]
"#
    )
}

const SERVICE_ENTRIES: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-external}
spec:
  hosts: [api.external.test]
  location: MESH_EXTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-by-vip}
spec:
  hosts: [static.external.test]
  addresses: [192.0.2.10]
  location: MESH_EXTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: API_IP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure-external}
spec:
  hosts: [secure.external.test]
  location: MESH_EXTERNAL
  ports: [{number: 9443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: raw-tcp}
spec:
  hosts: [raw.external.test]
  addresses: [RAW_IP/32]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: NONE
"#;

const TIMEOUT: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-external}
spec:
  hosts: [api.external.test]
  http:
  - timeout: 1s
    route: [{destination: {host: api.external.test, port: {number: 8080}}}]
"#;

const ALLOW_ANY: &str = r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  outboundTrafficPolicy: {mode: ALLOW_ANY}
"#;

/// What the egress scenarios ask of the running mesh.
impl Up {
    /// Every attempt the client has logged so far, oldest first.
    async fn attempts(&self) -> Vec<Value> {
        let (_, log, _) = self.weft(&["logs", "client"]).await;
        log.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The client's sidecar log: its access log lines among the rest.
    async fn access_log(&self) -> String {
        self.weft(&["logs", "client", "--proxy"]).await.1
    }

    /// The first attempt on `target` logged after the `since`th that satisfies `wanted`.
    async fn attempt(&self, since: usize, target: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let found = poll_until(Duration::from_secs(30), || async {
            self.attempts()
                .await
                .into_iter()
                .skip(since)
                .find(|a| a["target"] == target && wanted(a))
        })
        .await;
        if let Some(a) = found {
            return a;
        }
        let mut seen: Vec<Value> = self.attempts().await;
        seen.retain(|a| a["target"] == target);
        let last = &seen[seen.len().saturating_sub(3)..];
        panic!("no attempt on {target} as wanted; the last ones: {last:#?}")
    }

    /// The client proxy's config version, once it has acknowledged what it was sent.
    async fn synced_version(&self) -> Option<String> {
        let (_, out, _) = self.weft(&["proxy-status", "-o", "json"]).await;
        let proxies: Value = serde_json::from_str(&out).ok()?;
        proxies
            .as_array()?
            .iter()
            .find(|p| p["name"] == "client-0.default" && p["status"] == "SYNCED")
            .and_then(|p| p["ackedVersion"].as_str().map(str::to_string))
    }

    /// Applies `yaml` and waits until the client's proxy has acknowledged the config it
    /// makes; returns how many attempts were logged by then.
    async fn apply(&self, name: &str, yaml: &str) -> usize {
        let before = poll_until(Duration::from_secs(20), || self.synced_version())
            .await
            .expect("the client's proxy is connected and synced");
        let file = self.state.path().join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let (status, out, err) = self
            .weft(&["apply", "-f", &file.display().to_string()])
            .await;
        assert!(status.success(), "weft apply {name}: {out}{err}");
        let acked = poll_until(Duration::from_secs(20), || async {
            self.synced_version().await.filter(|v| *v != before)
        })
        .await;
        assert!(
            acked.is_some(),
            "the client's proxy never acknowledged {name}: {}",
            self.weft(&["proxy-status"]).await.1
        );
        self.attempts().await.len()
    }
}

fn ok(a: &Value) -> bool {
    a["error"].is_null() && a["status"].is_null()
}

fn answered(code: u16) -> impl Fn(&Value) -> bool {
    move |a| a["status"] == code
}

/// The first access-log line that holds every one of `parts`.
fn logged<'a>(log: &'a str, parts: &[&str]) -> Option<&'a str> {
    log.lines().find(|l| parts.iter().all(|p| l.contains(p)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_is_blocked_by_default_then_declared_limited_and_opened() {
    let up = Up::start(&mesh_file()).await;
    let status = all_ready(&up, 3).await;
    let ips: Vec<&str> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["ip"].as_str())
        .collect();
    assert_eq!(ips, [CLIENT_IP, API_IP, RAW_IP], "{status}");
    // Pods without a sidecar do not announce themselves: only the client's proxy follows
    // the control plane.
    let (_, proxies, _) = up.weft(&["proxy-status", "-o", "json"]).await;
    let proxies: Value = serde_json::from_str(&proxies).unwrap();
    assert_eq!(proxies.as_array().map(Vec::len), Some(1), "{proxies}");

    // (a) REGISTRY_ONLY: nothing outside the mesh is reachable. The 502 names the
    // destination and the setting, and the sidecar logs it as BlackHoleCluster.
    let since = up.attempts().await.len();
    let blocked = up.attempt(since, API, answered(502)).await;
    let body = blocked["body"].as_str().unwrap();
    assert!(
        body.contains("api.external.test") && body.contains("REGISTRY_ONLY"),
        "{blocked}"
    );
    assert_eq!(
        blocked["hint"], "blocked by outboundTrafficPolicy REGISTRY_ONLY",
        "{blocked}"
    );
    for target in [SLOW, BY_VIP, UNDECLARED] {
        up.attempt(since, target, answered(502)).await;
    }
    for target in [TLS, TCP] {
        let closed = up.attempt(since, target, |a| !a["error"].is_null()).await;
        assert!(
            closed["error"].as_str().unwrap().starts_with("closed"),
            "{closed}"
        );
    }
    let log = up.access_log().await;
    for parts in [
        &[" 502 ", "\"api.external.test:8080\"", " BlackHoleCluster "][..],
        &[" BlackHoleCluster ", &format!(" {RAW_IP}:9443 ")],
        &[" BlackHoleCluster ", &format!(" {RAW_IP}:9000 ")],
    ] {
        assert!(
            logged(&log, parts).is_some(),
            "no line with {parts:?}:\n{log}"
        );
    }

    // (b) ServiceEntries open each way out: HTTP by Host (DNS: the sidecar resolves the name
    // in the pod, as the app does), HTTP by a STATIC entry's address, TLS by SNI, TCP by
    // address and port (NONE: to where the app dialed). An undeclared address stays closed.
    let entries = SERVICE_ENTRIES
        .replace("API_IP", API_IP)
        .replace("RAW_IP", RAW_IP);
    let since = up.apply("service-entries", &entries).await;
    let allowed = up.attempt(since, API, answered(200)).await;
    assert_eq!(allowed["body"], "api answered GET / (end-user: -)\n");
    let by_vip = up.attempt(since, BY_VIP, answered(200)).await;
    assert_eq!(by_vip["body"], "api answered GET /by-vip (end-user: -)\n");
    up.attempt(since, TLS, ok).await;
    up.attempt(since, TCP, ok).await;
    let slow = up.attempt(since, SLOW, answered(200)).await;
    assert!(slow["ms"].as_u64() >= Some(3000), "{slow}");
    let undeclared = up.attempt(since, UNDECLARED, |_| true).await;
    assert_eq!(undeclared["status"], 502, "{undeclared}");
    let log = up.access_log().await;
    for parts in [
        &[" 200 ", "outbound|8080||api.external.test"][..],
        &[
            " 200 ",
            "outbound|8080||static.external.test",
            &format!("\"{API_IP}:8080\""),
        ],
        &["outbound|9443||secure.external.test"],
        &[
            "outbound|9000||raw.external.test",
            &format!("\"{RAW_IP}:9000\""),
        ],
    ] {
        assert!(
            logged(&log, parts).is_some(),
            "no line with {parts:?}:\n{log}"
        );
    }

    // (c) A VirtualService on the external host limits it like a mesh service: 504 after
    // the route's 1 s, flagged UT, while fast calls still get through.
    let since = up.apply("timeout", TIMEOUT).await;
    let timed_out = up.attempt(since, SLOW, answered(504)).await;
    let ms = timed_out["ms"].as_u64().unwrap();
    assert!((900..2500).contains(&ms), "{timed_out}");
    up.attempt(since, API, answered(200)).await;
    let log = up.access_log().await;
    assert!(
        logged(
            &log,
            &["/slow?delay_ms=3000", " 504 UT ", "api.external.test"]
        )
        .is_some(),
        "{log}"
    );
    eprintln!("egress: blocked {blocked}\nallowed {allowed}\nslow {slow}\ntimed out {timed_out}");

    // (d) ALLOW_ANY from a Sidecar: what no registry entry names passes through to where the
    // app dialed.
    let since = up.apply("allow-any", ALLOW_ANY).await;
    let passed = up.attempt(since, UNDECLARED, answered(200)).await;
    assert_eq!(
        passed["body"],
        "api answered GET /undeclared (end-user: -)\n"
    );
    let log = up.access_log().await;
    assert!(
        logged(&log, &["/undeclared", " 200 ", " PassthroughCluster "]).is_some(),
        "{log}"
    );

    let (status, _, err) = up.weft(&["down"]).await;
    assert!(status.success(), "{err}");
    let mut upped = up.weft;
    assert!(upped.wait_exit(Duration::from_secs(20)).await.is_some());
}

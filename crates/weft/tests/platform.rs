//! `weft up` for real: pods in their own network namespaces on a bridge, istio-init's
//! iptables rules, sidecars following the control plane, service addresses and names; then
//! `weft down`, after which nothing of the mesh is left running.
//!
//! Runs as whoever runs the tests: as root it uses plain namespaces, otherwise a user
//! namespace. It fails, never skips, when namespaces cannot be made.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::local_mesh::{all_ready, Up, AS_NOBODY};
use support::*;

/// A server; a client that calls it by its service name through both sidecars and prints
/// what it got (`weft bench load` output, as JSON) to its log; an ingress gateway on a host
/// port, with Istio's Gateway and a VirtualService bound to it.
fn mesh_file(gateway_port: u16) -> String {
    let gateway = r#"---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  labels: {app: istio-ingressgateway, istio: ingressgateway}
  gateway: {hostPorts: [PORT]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: hello-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: PORT, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello}
spec:
  hosts: ["*"]
  gateways: [hello-gateway]
  http:
  - match: [{uri: {prefix: /hello}}]
    route: [{destination: {host: hello, port: {number: 8080}}}]
"#
    .replace("PORT", &gateway_port.to_string());
    r#"apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 8080}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: hello-v1}
spec:
  labels: {app: hello, version: v1}
  command: [weft, echo, --name, hello-v1, --listen, "0.0.0.0:8080"]
  ports: [8080]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: caller}
spec:
  labels: {app: caller, version: v1}
  command: [weft, bench, load, --target, "10.96.0.10:8080", --authority, "hello:8080", --connections, "1", --seconds, "1"]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: legacy, namespace: legacy}
spec:
  sidecar: false
  command: [weft, probe, call, --every-ms, "200", "http://hello.default:8080/"]
"#
    .to_string()
        + &gateway
}

/// Processes whose command line names `needle` (the mesh's state directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

/// Waits until no process names the state directory any more.
async fn nothing_left(state_dir: &str) {
    let left = poll_until(Duration::from_secs(10), || {
        std::future::ready(processes_mentioning(state_dir).is_empty().then_some(()))
    })
    .await;
    assert!(
        left.is_some(),
        "left running: {:?}",
        processes_mentioning(state_dir)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootless_weft_up_works_in_a_user_namespace_and_a_killed_one_leaves_nothing() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let wrapper: &[&str] = if root { &AS_NOBODY } else { &[] };
    let gateway = free_addrs::<1>()[0];
    let mut up = Up::start_via(wrapper, &mesh_file(gateway.port())).await;
    let status = all_ready(&up, 4).await;
    assert_eq!(status["mode"], "rootless", "{status}");
    let c = client();
    let through_gateway = poll_until(Duration::from_secs(20), || async {
        let a = send(&c, "GET", gateway, "example", "/hello", &[])
            .await
            .ok()?;
        (a.status == 200).then_some(())
    })
    .await;
    assert!(
        through_gateway.is_some(),
        "the rootless gateway never answered"
    );

    // weft up dies without a chance to clean up: its namespaces go with it anyway.
    let state_dir = up.state_dir();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &up.weft.child.id().to_string()])
        .status();
    up.weft.wait_exit(Duration::from_secs(10)).await;
    nothing_left(&state_dir).await;
    // The next weft up on the same state directory reclaims what the dead one left there.
    up.restart();
    let pid = up.weft.child.id().to_string();
    let owns = poll_until(Duration::from_secs(20), || {
        let pids =
            std::fs::read_to_string(Path::new(&state_dir).join("up.pid")).unwrap_or_default();
        std::future::ready((pids.lines().next() == Some(pid.as_str())).then_some(()))
    })
    .await;
    assert!(
        owns.is_some(),
        "the new weft up never took over\n{}",
        up.weft.output()
    );
    all_ready(&up, 4).await;
    let (status, _, err) = up.weft(&["down"]).await;
    assert!(status.success(), "{err}");
    nothing_left(&state_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_up_runs_a_mesh_of_pods_and_weft_down_leaves_nothing() {
    let gateway = free_addrs::<1>()[0];
    let up = Up::start(&mesh_file(gateway.port())).await;
    let status = all_ready(&up, 4).await;
    let ips: Vec<&str> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["ip"].as_str())
        .collect();
    assert_eq!(
        ips,
        ["10.44.0.2", "10.44.0.3", "10.44.0.4", "10.44.0.5"],
        "{status}"
    );
    let (_, table, _) = up.weft(&["status"]).await;
    assert!(
        table.starts_with("NAMESPACE") && table.contains("NAME"),
        "{table}"
    );
    assert!(
        table.contains("hello-v1-0") && table.contains("1/1"),
        "{table}"
    );

    // Both sidecars follow the control plane, which the host reaches on its port.
    let (_, proxies, err) = up.weft(&["proxy-status", "-o", "json"]).await;
    let proxies: Value = serde_json::from_str(&proxies).unwrap_or_else(|_| panic!("{err}"));
    // legacy has no sidecar.
    assert_eq!(proxies.as_array().map(Vec::len), Some(3), "{proxies}");

    // The caller dials the service address by name; iptables hands the connection to its
    // sidecar, which sends it to hello's pod, whose sidecar hands it to hello.
    let served = poll_until(Duration::from_secs(30), || async {
        let (_, log, _) = up.weft(&["logs", "caller"]).await;
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|o| o["requests"].as_u64() > Some(0) && o["errors"] == 0)
            .or_else(|| {
                // Pretty-printed JSON spans lines: read the whole log as a stream of values.
                serde_json::Deserializer::from_str(&log)
                    .into_iter::<Value>()
                    .filter_map(Result::ok)
                    .find(|o| o["requests"].as_u64() > Some(0) && o["errors"] == 0)
            })
    })
    .await;
    assert!(
        served.is_some(),
        "the caller never got through: {}",
        up.weft(&["logs", "caller"]).await.1
    );
    let (_, access, _) = up.weft(&["logs", "hello-v1", "--proxy"]).await;
    assert!(
        access.contains(r#""GET / HTTP/1.1" 200"#)
            && access.contains(r#""hello:8080" "10.44.0.3:8080""#),
        "{access}"
    );

    // A pod outside the mesh reaches hello's clusterIP as through kube-proxy (DNAT to the
    // pod), in plaintext, which hello's sidecar takes (PERMISSIVE).
    let legacy = poll_until(Duration::from_secs(30), || async {
        let (_, log, _) = up.weft(&["logs", "legacy", "-n", "legacy"]).await;
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|o| o["status"] == 200)
    })
    .await;
    assert!(
        legacy.is_some_and(|o| o["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("hello-v1 answered GET /"))),
        "the pod outside the mesh never reached hello: {}",
        up.weft(&["logs", "legacy", "-n", "legacy"]).await.1
    );

    // From the host, through the ingress gateway, to hello; a path the VirtualService does
    // not route is 404.
    let c = client();
    let through_gateway = poll_until(Duration::from_secs(20), || async {
        let a = send(&c, "GET", gateway, "bookinfo.example", "/hello", &[])
            .await
            .ok()?;
        (a.status == 200).then_some(a)
    })
    .await
    .expect("the gateway answers on the host port");
    assert_eq!(
        through_gateway.text(),
        "hello-v1 answered GET /hello (end-user: -)\n"
    );
    let missing = send(&c, "GET", gateway, "bookinfo.example", "/nope", &[]).await;
    assert_eq!(missing.unwrap().status, 404);

    // weft down stops weft up; the namespaces, and everything in them, go with it.
    let state_dir = up.state_dir();
    let (status, _, err) = up.weft(&["down"]).await;
    assert!(status.success(), "{err}");
    let mut upped = up.weft;
    assert!(upped.wait_exit(Duration::from_secs(20)).await.is_some());
    let left = poll_until(Duration::from_secs(10), || {
        std::future::ready(processes_mentioning(&state_dir).is_empty().then_some(()))
    })
    .await;
    assert!(
        left.is_some(),
        "left running: {:?}",
        processes_mentioning(&state_dir)
    );
    // Sidecars were stopped with SIGTERM and drained, not killed: the gateway (no app) for
    // its whole drain period; hello's once its app had exited (a second SIGTERM).
    let log = |pod: &str| {
        std::fs::read_to_string(Path::new(&state_dir).join(format!("logs/{pod}.proxy.log")))
            .unwrap_or_default()
    };
    let gateway_log = log("istio-system.istio-ingressgateway-0");
    assert!(
        gateway_log.contains("SIGTERM: draining for 5s")
            && gateway_log.contains("drain period over: exiting"),
        "{gateway_log}"
    );
    let hello_log = log("default.hello-v1-0");
    assert!(
        hello_log.contains("SIGTERM: draining") && hello_log.contains("SIGTERM again: exiting now"),
        "{hello_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_from_an_earlier_run_is_restored_with_a_word_and_fresh_forgets_it() {
    let gateway = free_addrs::<1>()[0];
    let mut up = Up::start(&mesh_file(gateway.port())).await;
    all_ready(&up, 4).await;
    assert!(
        !up.summary().await.contains("restored"),
        "{}",
        up.weft.output()
    );
    let extra = up.state.path().join("extra.yaml");
    std::fs::write(
        &extra,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: extra-policy}\nspec:\n  host: hello\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n",
    )
    .unwrap();
    let (status, _, err) = up
        .weft(&["apply", "-f", &extra.display().to_string()])
        .await;
    assert!(status.success(), "{err}");

    stop(&up).await;
    up.weft.wait_exit(Duration::from_secs(20)).await;
    up.restart();
    all_ready(&up, 4).await;
    let summary = up.summary().await;
    assert!(
        summary.contains("restored from an earlier run")
            && summary.contains("DestinationRule default/extra-policy")
            && summary.contains("--fresh"),
        "{summary}"
    );
    let (status, _, _) = up.weft(&["get", "dr", "extra-policy"]).await;
    assert!(status.success());

    stop(&up).await;
    up.weft.wait_exit(Duration::from_secs(20)).await;
    up.restart_with(&["--fresh"]);
    all_ready(&up, 4).await;
    assert!(
        !up.summary().await.contains("restored"),
        "{}",
        up.weft.output()
    );
    let (status, _, err) = up.weft(&["get", "dr", "extra-policy"]).await;
    assert!(!status.success() && err.contains("not found"), "{err}");
    stop(&up).await;
}

async fn stop(up: &Up) {
    let (status, _, err) = up.weft(&["down"]).await;
    assert!(status.success(), "{err}");
}

//! The dashboard end to end: `weft control` with its dashboard, real `weft proxy` sidecars
//! announcing their workloads, traffic through them, and the dashboard's own aggregator
//! scraping their 15020 into Kiali's graph API and Weft's endpoints.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

const CONFIG: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {http: {http1MaxPendingRequests: 100}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
";

/// Addresses of their own, so the sidecars' endpoints (IP:9080) clash with nothing else.
const REVIEWS_V1: &str = "127.0.83.1";
const REVIEWS_V2: &str = "127.0.83.2";
const PRODUCTPAGE: &str = "127.0.83.3";

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let a = send(&client(), "GET", addr, "localhost", path, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(a.status, 200, "GET {path}: {}", a.text());
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", a.text()))
}

/// `weft control` on `config` with its dashboard and `extra` arguments, once the dashboard
/// answers; with its discovery and dashboard addresses.
async fn control_with_dashboard(config: &Path, extra: &[&str]) -> (Weft, SocketAddr, SocketAddr) {
    let [grpc, monitoring, dashboard] = free_addrs::<3>();
    let mut args = vec![
        "control".to_string(),
        "--config-dir".into(),
        config.display().to_string(),
        "--grpc".into(),
        grpc.to_string(),
        "--monitoring".into(),
        monitoring.to_string(),
        "--grpc-tls".into(),
        "127.0.0.1:0".into(),
        "--dashboard".into(),
        dashboard.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let control = Weft::spawn(&args);
    let c = client();
    let up = poll_until(Duration::from_secs(20), || async {
        let a = send(&c, "GET", dashboard, "localhost", "/api/weft/status", &[]).await;
        a.ok().filter(|a| a.status == 200)
    })
    .await;
    assert!(
        up.is_some(),
        "no dashboard on {dashboard}\n{}",
        control.output()
    );
    (control, grpc, dashboard)
}

/// A sidecar following `control` as `pod`, and its outbound address.
fn sidecar(
    control: SocketAddr,
    token: &Path,
    ip: &str,
    pod: &str,
    labels: &str,
    extra: &[String],
) -> (Weft, SocketAddr) {
    let [outbound, admin, health] = free_addrs::<3>();
    let outbound_flag = outbound.to_string();
    let mut args: Vec<String> = [
        "proxy",
        "--control-plane",
        &control.to_string(),
        "--join-token-file",
        &token.display().to_string(),
        "--pod-name",
        &format!("{pod}-0"),
        "--workload-name",
        pod,
        "--labels",
        labels,
        "--address",
        ip,
        "--outbound",
        &outbound_flag,
        "--admin",
        &admin.to_string(),
        "--health",
        &health.to_string(),
        "--stats",
        &format!("{ip}:0"),
        "--envoy-stats",
        &format!("{ip}:0"),
        "--access-log",
        "off",
        "--no-capture",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().cloned());
    (Weft::spawn(&args), outbound)
}

fn node<'a>(graph: &'a Value, id: &str) -> Option<&'a Value> {
    graph["elements"]["nodes"]
        .as_array()?
        .iter()
        .map(|n| &n["data"])
        .find(|d| d["id"] == id)
}

fn edge<'a>(graph: &'a Value, from: &str, to: &str) -> Option<&'a Value> {
    graph["elements"]["edges"]
        .as_array()?
        .iter()
        .map(|e| &e["data"])
        .find(|d| d["source"] == from && d["target"] == to)
}

fn rate(edge: &Value) -> f64 {
    edge["traffic"]["rates"]["http"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_graphs_live_traffic_from_the_proxies_it_scrapes() {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("reviews.yaml"), CONFIG).unwrap();
    // A Zipkin for the trace pages to read (another control plane's collector serves
    // Zipkin's API), holding one span.
    let zipkin_config = tempfile::tempdir().unwrap();
    let [zipkin, zipkin_grpc, zipkin_monitoring] = free_addrs::<3>();
    let _zipkin = Weft::spawn(
        &[
            "control",
            "--config-dir",
            &zipkin_config.path().display().to_string(),
            "--grpc",
            &zipkin_grpc.to_string(),
            "--monitoring",
            &zipkin_monitoring.to_string(),
            "--grpc-tls",
            "127.0.0.1:0",
            "--zipkin",
            &zipkin.to_string(),
            "--no-dashboard",
        ]
        .map(String::from),
    );
    let span = r#"[{"traceId":"5af7183fb1d4cf5f5af7183fb1d4cf5f","id":"6b221d5bc9e6496c","name":"get /elsewhere","timestamp":1764684000000000,"duration":1200,"kind":"SERVER","localEndpoint":{"serviceName":"elsewhere.default"}}]"#;
    let posted = poll_until(Duration::from_secs(20), || async {
        let mut stream = tokio::net::TcpStream::connect(zipkin).await.ok()?;
        let request = format!(
            "POST /api/v2/spans HTTP/1.1\r\nHost: zipkin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{span}",
            span.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer).await.ok()?;
        answer.starts_with("HTTP/1.1 202").then_some(())
    })
    .await;
    assert!(posted.is_some(), "the Zipkin never took the span");
    let zipkin_url = format!("http://{zipkin}");
    let (_control, grpc, dashboard) = control_with_dashboard(
        config.path(),
        &["--scrape-interval", "1", "--tracing-url", &zipkin_url],
    )
    .await;
    let c = client();
    let token = weft_discovery::credentials::join_token_file(config.path());

    let v1 = Backend::start("127.0.0.1", "reviews-v1").await;
    let v2 = Backend::start("127.0.0.1", "reviews-v2").await;
    let server = |ip: &str, pod: &str, version: &str, backend: SocketAddr| {
        sidecar(
            grpc,
            &token,
            ip,
            pod,
            &format!("app=reviews,version={version}"),
            &[
                "--inbound".into(),
                format!("{ip}:9080"),
                "--inbound-target".into(),
                backend.to_string(),
            ],
        )
    };
    let _reviews_v1 = server(REVIEWS_V1, "reviews-v1", "v1", v1.addr);
    let _reviews_v2 = server(REVIEWS_V2, "reviews-v2", "v2", v2.addr);
    let productpage = sidecar(
        grpc,
        &token,
        PRODUCTPAGE,
        "productpage-v1",
        "app=productpage,version=v1",
        &["--inbound".into(), free_addrs::<1>()[0].to_string()],
    );
    let outbound = productpage.1;

    // Every proxy connected and in sync, as /api/weft/proxies reports it.
    let synced = poll_until(Duration::from_secs(20), || async {
        let proxies = get_json(dashboard, "/api/weft/proxies").await;
        let all = proxies.as_array()?;
        (all.len() == 3 && all.iter().all(|p| p["sync"] == "SYNCED")).then_some(())
    })
    .await;
    assert!(
        synced.is_some(),
        "{}\n{}",
        get_json(dashboard, "/api/weft/proxies").await,
        productpage.0.output()
    );

    // Load: 40 requests a second through productpage's sidecar, and a few straight to
    // reviews-v1's sidecar from a caller without one.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent, c) = (stop.clone(), sent.clone(), c.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            let direct: SocketAddr = format!("{REVIEWS_V1}:9080").parse().unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let a = send(&c, "GET", outbound, "reviews:9080", "/reviews/0", &[]).await;
                if a.is_ok_and(|a| a.status == 200) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
                if n.is_multiple_of(8) {
                    let _ = send(&c, "GET", direct, "reviews:9080", "/reviews/0", &[]).await;
                }
            }
        })
    };

    // The graph fills in as the aggregator's scrapes (every second) see the counters move.
    let started = Instant::now();
    let path = "/api/namespaces/graph?namespaces=default&graphType=versionedApp&duration=10s";
    let graph = poll_until(Duration::from_secs(40), || async {
        let g = get_json(dashboard, path).await;
        let pp = "app-default-productpage-v1";
        let svc = "svc-default-reviews";
        let complete = edge(&g, pp, svc).is_some_and(|e| rate(e) > 0.0)
            && edge(&g, svc, "app-default-reviews-v1").is_some_and(|e| rate(e) > 0.0)
            && edge(&g, svc, "app-default-reviews-v2").is_some_and(|e| rate(e) > 0.0)
            // The callee's sidecar alone reports a caller without one.
            && edge(&g, "unknown", svc).is_some()
            // A full window of samples, for the rate's check below.
            && started.elapsed() > Duration::from_secs(12);
        complete.then_some(g)
    })
    .await;
    let Some(graph) = graph else {
        panic!(
            "the graph never showed productpage → reviews → v1/v2: {}\nstatus: {}",
            get_json(dashboard, path).await,
            get_json(dashboard, "/api/weft/status").await
        );
    };
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 100, "the load itself failed");

    // Rates: the window's 10 s at 40 requests a second, within ±35 % (a loaded machine
    // ticks late; scrapes land anywhere in their second).
    let pp = "app-default-productpage-v1";
    let svc = "svc-default-reviews";
    let to_svc = edge(&graph, pp, svc).unwrap();
    let r = rate(to_svc);
    assert!(
        (26.0..=54.0).contains(&r),
        "productpage → reviews at {r}/s: {to_svc}"
    );
    assert_eq!(to_svc["traffic"]["protocol"], "http");
    assert_eq!(to_svc["traffic"]["rates"]["httpPercentErr"], "0.0");
    assert_eq!(
        to_svc["traffic"]["responses"]["200"]["flags"]["-"], "100.0",
        "{to_svc}"
    );
    assert!(
        to_svc["responseTime"].as_str().is_some(),
        "no p95: {to_svc}"
    );
    // The 50/50 split shows in each version's share of the service's requests, within
    // 50 ± 20 % (several hundred requests, each a coin toss).
    for version in ["v1", "v2"] {
        let e = edge(&graph, svc, &format!("app-default-reviews-{version}")).unwrap();
        let share: f64 = e["traffic"]["rates"]["httpPercentReq"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no httpPercentReq: {e}"));
        assert!(
            (30.0..=70.0).contains(&share),
            "{version} has {share} %: {e}"
        );
    }

    // Nodes: the versions boxed by app, the caller without a sidecar, the badges.
    let reviews = node(&graph, svc).unwrap();
    assert_eq!(reviews["nodeType"], "service");
    assert_eq!(
        reviews["hasVS"]["hostnames"],
        serde_json::json!(["reviews"])
    );
    assert_eq!(reviews["hasTrafficShifting"], true);
    assert_eq!(reviews["hasCB"], true, "{reviews}");
    let weights: Vec<(String, i64)> = reviews["weft"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["subset"].as_str().unwrap().to_string(),
                w["weight"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(weights, vec![("v1".into(), 50), ("v2".into(), 50)]);
    let v2_node = node(&graph, "app-default-reviews-v2").unwrap();
    assert_eq!(v2_node["parent"], "box-default-reviews");
    assert_eq!(v2_node["workload"], "reviews-v2");
    assert_eq!(node(&graph, "box-default-reviews").unwrap()["isBox"], "app");
    assert_eq!(node(&graph, pp).unwrap()["isRoot"], true);
    // One version: no box.
    assert!(node(&graph, pp).unwrap().get("parent").is_none());
    assert!(node(&graph, "box-default-productpage").is_none());
    assert_eq!(node(&graph, "unknown").unwrap()["nodeType"], "unknown");

    // The other graph types name the same traffic differently.
    let workloads = get_json(
        dashboard,
        "/api/namespaces/graph?graphType=workload&duration=10s",
    )
    .await;
    assert!(
        edge(&workloads, "wl-default-productpage-v1", svc).is_some(),
        "{workloads}"
    );
    let services = get_json(
        dashboard,
        "/api/namespaces/graph?graphType=service&duration=10s",
    )
    .await;
    assert!(
        edge(&services, "app-default-productpage", svc).is_some(),
        "{services}"
    );

    // The services and workloads pages: what the mesh holds, with figures and charts.
    let services = get_json(dashboard, "/api/weft/services?namespace=default").await;
    let reviews = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "reviews")
        .unwrap_or_else(|| panic!("{services}"));
    assert_eq!(
        reviews["workloads"],
        serde_json::json!(["reviews-v1", "reviews-v2"])
    );
    // Over the lists' minute, of which the test has run a quarter.
    assert!(
        reviews["rps"].as_f64().is_some_and(|r| r > 2.0),
        "{reviews}"
    );
    assert_eq!(reviews["successRate"], 100.0);
    assert!(reviews["p95"].as_f64().is_some(), "{reviews}");
    let workloads = get_json(dashboard, "/api/weft/workloads?namespace=default").await;
    let v1 = workloads
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "reviews-v1")
        .unwrap_or_else(|| panic!("{workloads}"));
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["services"], serde_json::json!(["reviews"]));
    assert_eq!(v1["pods"][0]["name"], "reviews-v1-0");
    assert_eq!(v1["pods"][0]["ready"], true);
    let charts = get_json(
        dashboard,
        "/api/weft/metrics?kind=service&namespace=default&name=reviews&duration=60&step=5",
    )
    .await;
    let chart = |id: &str| {
        charts["charts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id} chart: {charts}"))
            .clone()
    };
    let has_values = |series: &Value| {
        series["values"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x.as_f64().is_some_and(|x| x > 0.0)))
    };
    let volume = chart("requests");
    let by_productpage = volume["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "productpage-v1.default")
        .unwrap_or_else(|| panic!("{volume}"));
    assert!(has_values(by_productpage), "{volume}");
    assert_eq!(
        by_productpage["values"].as_array().unwrap().len(),
        charts["timestamps"].as_array().unwrap().len()
    );
    let latency = chart("latency");
    assert!(has_values(&latency["series"][0]), "{latency}");
    assert_eq!(latency["series"][2]["name"], "p99");
    let outbound = get_json(
        dashboard,
        "/api/weft/metrics?kind=workload&namespace=default&name=productpage-v1&direction=outbound&duration=60&step=5",
    )
    .await;
    assert_eq!(
        outbound["charts"][0]["series"][0]["name"], "reviews.default.svc.cluster.local",
        "{outbound}"
    );

    // weft stat and weft top print the same figures for the terminal and scripts.
    let addr = dashboard.to_string();
    let (status, out, err) = run_weft(
        &[
            "stat",
            "workloads",
            "-n",
            "default",
            "--dashboard",
            &addr,
            "-o",
            "json",
        ]
        .map(String::from),
    )
    .await;
    assert!(status.success(), "{err}");
    let stat: Value = serde_json::from_str(&out).unwrap();
    assert!(
        stat.as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "reviews-v2" && w["rps"].as_f64().is_some()),
        "{stat}"
    );
    let (status, out, err) =
        run_weft(&["top", "services", "--once", "--dashboard", &addr].map(String::from)).await;
    assert!(status.success(), "{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAMESPACE") && header.contains("LATENCY_P99"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("reviews") && l.contains("100.00%")),
        "{out}"
    );

    // Routes: the split (unnamed, so `http[1]`) with its traffic, and the named route that
    // saw none, listed from the config.
    let routes = get_json(dashboard, "/api/weft/routes?namespace=default").await;
    let route = |name: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .unwrap_or_else(|| panic!("no route {name}: {routes}"))
            .clone()
    };
    let split = route("http[1]");
    assert_eq!(split["virtualService"], "reviews", "{split}");
    assert_eq!(split["host"], "reviews.default.svc.cluster.local");
    assert!(split["rps"].as_f64().is_some_and(|r| r > 2.0), "{split}");
    assert_eq!(split["successRate"], 100.0);
    assert!(split["p99"].as_f64().is_some(), "{split}");
    let jason = route("jason");
    assert!(jason.get("rps").is_none(), "{jason}");
    let (status, out, err) =
        run_weft(&["top", "routes", "--once", "--dashboard", &addr].map(String::from)).await;
    assert!(status.success(), "{err}");
    assert!(
        out.lines()
            .next()
            .unwrap_or_default()
            .contains("VIRTUALSERVICE"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("http[1]") && l.contains("100.00%")),
        "{out}"
    );

    // Bad parameters are refused with a hint.
    let bad = send(
        &c,
        "GET",
        dashboard,
        "localhost",
        "/api/namespaces/graph?graphType=pods",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    let body: Value = serde_json::from_slice(&bad.body).unwrap();
    assert!(body["hint"].as_str().is_some(), "{body}");

    // The trace pages read the Zipkin given with --tracing-url.
    let services = get_json(dashboard, "/api/zipkin/api/v2/services").await;
    assert_eq!(services, serde_json::json!(["elsewhere.default"]));
    let trace = get_json(
        dashboard,
        "/api/zipkin/api/v2/trace/5af7183fb1d4cf5f5af7183fb1d4cf5f",
    )
    .await;
    assert_eq!(trace[0]["name"], "get /elsewhere", "{trace}");

    // The status counts what the aggregator holds, and names the trace source.
    let status = get_json(dashboard, "/api/weft/status").await;
    assert_eq!(status["tracing"]["source"], format!("http://{zipkin}/"));
    assert_eq!(status["metrics"]["source"], "builtin");
    assert!(
        status["metrics"]["series"].as_u64().unwrap() > 10,
        "{status}"
    );

    // A VirtualService with a host that does not exist, written to the directory: the
    // config view carries istioctl's IST0101 about it.
    std::fs::write(
        config.path().join("broken.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviewz}\nspec:\n  hosts: [reviewz]\n  http:\n  - route:\n    - destination: {host: reviewz}\n",
    )
    .unwrap();
    let flagged = poll_until(Duration::from_secs(20), || async {
        let all = get_json(dashboard, "/api/weft/config").await;
        let vs = all
            .as_array()?
            .iter()
            .find(|r| r["name"] == "reviewz")?
            .clone();
        vs["messages"]
            .as_array()?
            .iter()
            .any(|m| m["code"] == "IST0101" && m["level"] == "Error")
            .then_some(vs)
    })
    .await;
    let vs = flagged.expect("no IST0101 on the broken VirtualService");
    // It names the field, and the line of the YAML view that holds it.
    let message = vs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["code"] == "IST0101")
        .unwrap();
    assert_eq!(
        message["path"], "spec.http[0].route[0].destination.host",
        "{vs}"
    );
    let line = message["line"].as_u64().expect("a line") as usize;
    let yaml = vs["yaml"].as_str().unwrap();
    assert_eq!(
        yaml.lines().nth(line - 1).map(str::trim),
        Some("host: reviewz"),
        "{yaml}"
    );

    // Validation's warnings about what is in force show too, at their field.
    std::fs::write(
        config.path().join("shadowed.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: shadowed}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: reviews}}]\n",
    )
    .unwrap();
    let warned = poll_until(Duration::from_secs(20), || async {
        let all = get_json(dashboard, "/api/weft/config").await;
        let vs = all
            .as_array()?
            .iter()
            .find(|r| r["name"] == "shadowed")?
            .clone();
        let m = vs["messages"]
            .as_array()?
            .iter()
            .find(|m| m["path"] == "spec.http[1].match[0]")?
            .clone();
        Some((vs, m))
    })
    .await;
    let (vs, m) = warned.expect("no warning on the shadowed match");
    assert_eq!(m["level"], "Warning", "{m}");
    let yaml = vs["yaml"].as_str().unwrap();
    let line = m["line"].as_u64().expect("a line") as usize;
    assert_eq!(
        yaml.lines().nth(line - 1).map(str::trim),
        Some("- uri:"),
        "{yaml}"
    );

    // The web app itself, embedded.
    let page = send(&c, "GET", dashboard, "localhost", "/", &[])
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(page.text().contains("app.js"), "{}", page.text());
    let namespaces = get_json(dashboard, "/api/namespaces").await;
    assert!(namespaces
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == "default"));
}

/// Jaeger's answers for one Bookinfo trace, in its query API's JSON model (no Jaeger can
/// run here: it is in no registry this machine reaches, so a stand-in serves them).
const JAEGER_TRACE: &str = r#"{"data": [{"traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
 "spans": [
  {"traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "00f067aa0ba902b7",
   "operationName": "reviews.default.svc.cluster.local:9080/*",
   "references": [{"refType": "CHILD_OF", "traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "a2fb4a1d1a96d312"}],
   "startTime": 1700000000000100, "duration": 2500, "flags": 1,
   "tags": [{"key": "span.kind", "type": "string", "value": "client"},
            {"key": "http.status_code", "type": "int64", "value": 503},
            {"key": "response_flags", "type": "string", "value": "URX"}],
   "logs": [], "processID": "p1", "warnings": null},
  {"traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "a2fb4a1d1a96d312",
   "operationName": "productpage.default.svc.cluster.local:9080/productpage",
   "references": [], "startTime": 1700000000000000, "duration": 9000, "flags": 1,
   "tags": [{"key": "span.kind", "type": "string", "value": "server"}],
   "logs": [], "processID": "p2", "warnings": null}],
 "processes": {"p1": {"serviceName": "productpage.default", "tags": [{"key": "ip", "type": "string", "value": "10.44.0.3"}]},
               "p2": {"serviceName": "productpage.default", "tags": []}},
 "warnings": null}], "total": 0, "limit": 0, "offset": 0, "errors": null}"#;

/// A stand-in for Jaeger's query service under Istio's addon base path `/jaeger`, keeping
/// the requests it was sent.
async fn jaeger_query(seen: Arc<std::sync::Mutex<Vec<String>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let target = req.uri().to_string();
                        seen.lock().unwrap().push(target.clone());
                        let path = req.uri().path();
                        let body = match path {
                        "/jaeger/api/services" => r#"{"data": ["productpage.default", "reviews.default"], "total": 2}"#.to_string(),
                        "/jaeger/api/services/productpage.default/operations" => {
                            r#"{"data": ["productpage.default.svc.cluster.local:9080/productpage"]}"#.to_string()
                        }
                        "/jaeger/api/traces/4bf92f3577b34da6a3ce929d0e0e4736" => JAEGER_TRACE.to_string(),
                        // Jaeger refuses a search without a service.
                        "/jaeger/api/traces" if target.contains("service=productpage.default") => JAEGER_TRACE.to_string(),
                        "/jaeger/api/traces" if target.contains("service=") => r#"{"data": []}"#.to_string(),
                        _ => String::new(),
                    };
                        let status = if body.is_empty() { 404 } else { 200 };
                        let answer = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)));
                        async move { answer }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_trace_pages_read_a_jaeger_through_its_query_api() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let jaeger = jaeger_query(seen.clone()).await;
    let config = tempfile::tempdir().unwrap();
    let jaeger_url = format!("http://{jaeger}/jaeger");
    let (_control, _, dashboard) = control_with_dashboard(
        config.path(),
        &["--tracing-url", &jaeger_url, "--tracing-provider", "jaeger"],
    )
    .await;
    let c = client();
    let status = get_json(dashboard, "/api/weft/status").await;
    assert_eq!(status["tracing"]["provider"], "jaeger", "{status}");

    let services = get_json(dashboard, "/api/zipkin/api/v2/services").await;
    assert_eq!(
        services,
        serde_json::json!(["productpage.default", "reviews.default"])
    );
    let operations = get_json(
        dashboard,
        "/api/zipkin/api/v2/spans?serviceName=productpage.default",
    )
    .await;
    assert_eq!(
        operations,
        serde_json::json!(["productpage.default.svc.cluster.local:9080/productpage"])
    );

    // A search as the trace page sends it becomes Jaeger's; one without a service asks
    // every service and merges what they found.
    let found = get_json(
        dashboard,
        "/api/zipkin/api/v2/traces?serviceName=productpage.default&minDuration=1000&endTs=1700000001000&lookback=3600000&limit=20",
    )
    .await;
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    let everywhere = get_json(dashboard, "/api/zipkin/api/v2/traces?limit=5").await;
    assert_eq!(everywhere.as_array().map(Vec::len), Some(1), "{everywhere}");
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().any(|r| r
                .contains("/jaeger/api/traces?service=productpage.default&limit=20")
                && r.contains("minDuration=1000us")
                && r.contains("end=1700000001000000")
                && r.contains("start=1699996401000000")),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|r| r.contains("service=reviews.default&limit=5")),
            "{seen:?}"
        );
    }

    // One trace opens as Zipkin's spans, as the waterfall reads them.
    let trace = get_json(
        dashboard,
        "/api/zipkin/api/v2/trace/4bf92f3577b34da6a3ce929d0e0e4736",
    )
    .await;
    let spans = trace.as_array().unwrap();
    assert_eq!(spans.len(), 2, "{trace}");
    let client_span = spans.iter().find(|s| s["kind"] == "CLIENT").unwrap();
    assert_eq!(client_span["parentId"], "a2fb4a1d1a96d312");
    assert_eq!(client_span["tags"]["response_flags"], "URX");
    assert_eq!(client_span["tags"]["http.status_code"], "503");
    assert_eq!(
        client_span["localEndpoint"]["serviceName"],
        "productpage.default"
    );

    // A trace Jaeger does not have: a 502 that names where it asked.
    let missing = send(
        &c,
        "GET",
        dashboard,
        "localhost",
        "/api/zipkin/api/v2/trace/0000000000000001",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(missing.status, 502, "{}", missing.text());
    assert!(missing.text().contains("Jaeger"), "{}", missing.text());
}

/// `weft bench dashboard`, small: both runs happen, and the aggregator held every simulated
/// proxy's series, answered the graph over them, and cost the control plane something.
#[test]
fn the_dashboard_benchmark_measures_the_aggregator_it_ran() {
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(WEFT)
        .args(["bench", "dashboard", "--proxies", "10", "--services", "20"])
        .args([
            "--namespaces",
            "2",
            "--window",
            "2",
            "--scrape-interval",
            "1",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json = std::fs::read_to_string(out.path().join("dashboard.json")).unwrap();
    let r: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["series_per_proxy"], 122, "{r}");
    assert_eq!(r["store"]["series"], 1220, "{r}");
    assert_eq!(r["store"]["refused_series"], 0, "{r}");
    assert!(r["graph_ms"].as_f64().unwrap() > 0.0, "{r}");
    let cpu = |run: &str| r[run]["cpu_seconds_per_minute"].as_f64().unwrap();
    assert!(cpu("with_dashboard") > cpu("without_dashboard"), "{r}");
    let md = std::fs::read_to_string(out.path().join("dashboard.md")).unwrap();
    assert!(md.contains("| CPU, seconds per minute |"), "{md}");
}

//! Istio's standard metrics at `/stats/prometheus`, on real sockets: the labels Istio's
//! queries and dashboards select on.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::transport::orig_dst::FixedOriginalDst;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_requests_count_under_the_destination_service_and_version() {
    let v1 = Backend::start("127.0.0.2", "v1", ok()).await;
    let v2 = Backend::start("127.0.0.3", "v2", ok()).await;
    let yaml = service_yaml("reviews", 9080, &[("v1", &v1), ("v2", &v2)])
        + &subsets_yaml("reviews", &["v1", "v2"], "")
        + &reviews_routes("  - route:\n    - destination: {host: reviews, subset: v2}\n");
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    for _ in 0..3 {
        assert_eq!(c.served("reviews:9080", "/reviews/0", &[]).await, "v2");
    }
    let workload = format!("reviews-v2-{}", v2.addr.port());
    let labels = [
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_canonical_service", "productpage"),
        ("source_principal", "unknown"),
        ("destination_service", REVIEWS),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("destination_workload", &workload),
        ("destination_workload_namespace", "default"),
        ("destination_app", "reviews"),
        ("destination_version", "v2"),
        ("destination_canonical_revision", "v2"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ];
    let text = wait_for(proxy.proxy.stats_addr, "istio_requests_total", &labels, 3.0).await;
    assert!(
        text.contains("# TYPE istio_requests_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram\n"));
    let v2_only = [("destination_version", "v2")];
    let count = sample(&text, "istio_request_duration_milliseconds_count", &v2_only);
    assert_eq!(count, Some(3.0), "{text}");
    let inf = [("destination_version", "v2"), ("le", "+Inf")];
    assert_eq!(
        sample(&text, "istio_request_duration_milliseconds_bucket", &inf),
        Some(3.0)
    );
    // The backend answers with its name: 2 bytes each.
    let sent = sample(&text, "istio_response_bytes_sum", &v2_only);
    assert_eq!(sent, Some(6.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "istio_requests_total",
            &[("destination_version", "v1")]
        ),
        None
    );
    // Envoy's admin path serves the same.
    let admin = scrape(proxy.proxy.admin_addr).await;
    assert_eq!(sample(&admin, "istio_requests_total", &labels), Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_failures_carry_their_response_flags() {
    let v1 = Backend::start("127.0.0.2", "v1", ok()).await;
    let yaml = service_yaml("reviews", 9080, &[("v1", &v1)])
        + &subsets_yaml("reviews", &["v1", "v3"], "")
        + &reviews_routes(
            "  - match:
    - uri: {prefix: /abort}
    fault:
      abort:
        httpStatus: 418
        percentage: {value: 100}
    route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v3}
",
        );
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    assert_eq!(c.get("reviews:9080", "/", &[]).await.status, 503);
    assert_eq!(c.get("reviews:9080", "/abort", &[]).await.status, 418);
    let stats = proxy.proxy.stats_addr;
    let no_healthy = [
        ("destination_service", REVIEWS),
        ("response_code", "503"),
        ("response_flags", "UH"),
        // No endpoint answered: nothing is known of the destination workload.
        ("destination_version", "unknown"),
    ];
    wait_for(stats, "istio_requests_total", &no_healthy, 1.0).await;
    let aborted = [
        ("destination_service", REVIEWS),
        ("response_code", "418"),
        ("response_flags", "FI"),
    ];
    wait_for(stats, "istio_requests_total", &aborted, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_blocks_count_under_blackhole_cluster() {
    let proxy = TestProxy::start(&service_yaml("reviews", 9080, &[])).await;
    let c = proxy.client();
    for _ in 0..2 {
        assert_eq!(c.get("example.com", "/", &[]).await.status, 502);
    }
    let labels = [
        ("reporter", "source"),
        ("destination_service", "BlackHoleCluster"),
        ("destination_service_name", "BlackHoleCluster"),
        ("response_code", "502"),
        ("response_flags", "-"),
    ];
    wait_for(proxy.proxy.stats_addr, "istio_requests_total", &labels, 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_count_opened_closed_and_bytes() {
    let db = tcp_echo("127.0.0.2").await;
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  clusterIP: 127.10.0.7\n  selector: {{app: db}}\n  ports:\n  - {{name: tcp, port: 27017}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: db-v1\nspec:\n  address: {}\n  labels: {{app: db, version: v1}}\n  ports: {{tcp: {}}}\n",
        db.ip(),
        db.port()
    );
    let setup = Setup {
        orig_dst: Arc::new(FixedOriginalDst("127.10.0.7:27017".parse().unwrap())),
        ..Setup::default()
    };
    let proxy = TestProxy::start_with(&yaml, setup).await;
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.proxy.outbound_addr).await.unwrap();
        s.write_all(b"ping!").await.unwrap();
        let mut echo = [0u8; 5];
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping!");
    }
    let labels = [
        ("reporter", "source"),
        ("destination_service", "db.default.svc.cluster.local"),
        ("destination_app", "db"),
        ("destination_version", "v1"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
    ];
    let stats = proxy.proxy.stats_addr;
    let text = wait_for(stats, "istio_tcp_connections_closed_total", &labels, 2.0).await;
    let opened = sample(&text, "istio_tcp_connections_opened_total", &labels);
    assert_eq!(opened, Some(2.0), "{text}");
    let sent = sample(&text, "istio_tcp_sent_bytes_total", &labels);
    let received = sample(&text, "istio_tcp_received_bytes_total", &labels);
    assert_eq!((sent, received), (Some(10.0), Some(10.0)), "{text}");
    assert!(text.contains("# TYPE istio_tcp_connections_opened_total counter\n"));
    // TCP samples have no response code.
    let tcp_line = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .unwrap();
    assert!(!tcp_line.contains("response_code"), "{tcp_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_requests_are_reported_by_the_destination() {
    let app = Backend::start("127.0.0.1", "app", ok()).await;
    let (proxy, mut log) = inbound_sidecar(reviews_v3(), app.addr).await;
    let a = HttpClient::new(proxy.inbound_addr)
        .get("reviews:9080", "/reviews/0", &[])
        .await;
    assert_eq!(a.status, 200);
    // The access log names the hop as Istio does: `inbound|<the workload's port>||`.
    let entry = log.recv().await.unwrap();
    assert_eq!(
        entry.upstream_cluster.as_deref(),
        Some(format!("inbound|{}||", app.addr.port()).as_str())
    );
    let labels = [
        ("reporter", "destination"),
        ("source_workload", "unknown"),
        ("source_principal", "unknown"),
        ("destination_workload", "reviews-v3"),
        ("destination_app", "reviews"),
        ("destination_version", "v3"),
        ("destination_canonical_service", "reviews"),
        ("response_code", "200"),
        ("connection_security_policy", "none"),
    ];
    wait_for(proxy.stats_addr, "istio_requests_total", &labels, 1.0).await;
}

fn has_peer_headers(headers: &http::HeaderMap) -> bool {
    ["x-envoy-peer-metadata", "x-envoy-peer-metadata-id"]
        .iter()
        .any(|h| headers.contains_key(*h))
}

/// Istio's peer metadata exchange: the caller's sidecar names its workload to the callee's,
/// which reports it as the source; the callee's names its own on the response, which the
/// caller reports as the destination. Neither app sees the headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_name_both_ends_of_a_call_to_each_other() {
    let app = Backend::start("127.0.0.1", "app", ok()).await;
    let (server, _log) = inbound_sidecar(reviews_v3(), app.addr).await;
    // The endpoint is named as the control plane names an announced workload.
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews}}\nspec:\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: reviews-v3-0-127-0-0-1}}\nspec:\n  address: 127.0.0.1\n  labels: {{app: reviews, version: v3}}\n  ports: {{http: {}}}\n",
        server.inbound_addr.port()
    );
    let client = TestProxy::start(&yaml).await;
    let a = client.client().get("reviews:9080", "/reviews/0", &[]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(!has_peer_headers(&a.headers), "{:?}", a.headers);
    assert!(app
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|p| !has_peer_headers(&p.headers)));

    let caller = [
        ("source_workload", "productpage-v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
    ];
    let callee = [
        ("destination_workload", "reviews-v3"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "reviews"),
        ("destination_version", "v3"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v3"),
        ("destination_cluster", "Kubernetes"),
        ("response_code", "200"),
    ];
    let both = |reporter| {
        let mut labels = vec![("reporter", reporter)];
        labels.extend(caller);
        labels.extend(callee);
        labels
    };
    wait_for(
        server.stats_addr,
        "istio_requests_total",
        &both("destination"),
        1.0,
    )
    .await;
    wait_for(
        client.proxy.stats_addr,
        "istio_requests_total",
        &both("source"),
        1.0,
    )
    .await;
}

/// Peer metadata stays in the mesh: a MESH_EXTERNAL ServiceEntry's endpoint sees none, not
/// even a pair the app forged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_metadata_does_not_leave_the_mesh() {
    let external = Backend::start("127.0.0.1", "external", ok()).await;
    let port = external.addr.port();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: external}}\nspec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1}}]\n"
    );
    let client = TestProxy::start(&yaml).await;
    let forged = [
        ("x-envoy-peer-metadata", "Zm9v"),
        ("x-envoy-peer-metadata-id", "x"),
    ];
    let a = client
        .client()
        .get(&format!("api.example.com:{port}"), "/", &forged)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = external.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(!has_peer_headers(&seen[0].headers), "{:?}", seen[0].headers);
}

/// Opaque TCP to the workload: the access log names the hop `inbound|<port>||` as Istio
/// does, and the destination reports the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_tcp_is_logged_under_the_inbound_cluster() {
    let app = tcp_echo("127.0.0.1").await;
    let (proxy, mut log) = inbound_sidecar(reviews_v3(), app).await;
    echo_over_tcp("127.0.0.1", proxy.inbound_addr).await;
    let entry = log.recv().await.unwrap();
    assert_eq!(
        entry.upstream_cluster.as_deref(),
        Some(format!("inbound|{}||", app.port()).as_str())
    );
    let labels = [
        ("reporter", "destination"),
        ("destination_workload", "reviews-v3"),
        ("request_protocol", "tcp"),
    ];
    wait_for(
        proxy.stats_addr,
        "istio_tcp_connections_closed_total",
        &labels,
        1.0,
    )
    .await;
}

/// One round trip through an echo app, from `from`, in bytes that are not an HTTP request
/// line, so that sniffing hands the connection on as TCP.
async fn echo_over_tcp(from: &str, to: SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    s.write_all(b"\x00\x01 hello\n").await.unwrap();
    let mut echoed = [0u8; 9];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"\x00\x01 hello\n");
}

/// TCP carries no peer metadata: the destination names its caller from the registry, the
/// workload announced at the connection's source address, whether a service selects it
/// (productpage) or not (a `sleep` client without a Service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_tcp_names_the_caller_the_registry_has_at_its_address() {
    let app = tcp_echo("127.0.0.1").await;
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: productpage}\nspec:\n  selector: {app: productpage}\n  ports: [{name: http, port: 9080}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: productpage-v1-0-127-0-0-9}\nspec:\n  address: 127.0.0.9\n  labels: {app: productpage, version: v1, service.istio.io/workload-name: productpage-v1}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: sleep-0-127-0-0-10, namespace: tools}\nspec:\n  address: 127.0.0.10\n  labels: {app: sleep, service.istio.io/workload-name: sleep}\n";
    let (proxy, _log) = inbound_sidecar_with(reviews_v3(), app, yaml).await;
    for (from, workload, app, version, namespace) in [
        (
            "127.0.0.9",
            "productpage-v1",
            "productpage",
            "v1",
            "default",
        ),
        ("127.0.0.10", "sleep", "sleep", "unknown", "tools"),
    ] {
        echo_over_tcp(from, proxy.inbound_addr).await;
        let labels = [
            ("reporter", "destination"),
            ("source_workload", workload),
            ("source_app", app),
            ("source_version", version),
            ("source_workload_namespace", namespace),
            ("destination_workload", "reviews-v3"),
            ("request_protocol", "tcp"),
        ];
        wait_for(
            proxy.stats_addr,
            "istio_tcp_connections_closed_total",
            &labels,
            1.0,
        )
        .await;
    }
}

/// Envoy's cluster stats, with Istio's `cluster_name` tag, on 15090 and merged on 15020 with
/// the process's own metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_cluster_stats_count_tries_retries_and_connections() {
    let flaky = Backend::start(
        "127.0.0.5",
        "v1",
        Arc::new(|n| (if n < 2 { 503 } else { 200 }, None)),
    )
    .await;
    let yaml = service_yaml("reviews", 9080, &[("v1", &flaky)])
        + &reviews_routes(
            "  - route:\n    - destination: {host: reviews}\n    retries: {attempts: 2, retryOn: \"503\"}\n",
        );
    let proxy = TestProxy::start(&yaml).await;
    assert_eq!(
        proxy.client().get("reviews:9080", "/", &[]).await.status,
        200
    );
    let cluster = [(
        "cluster_name",
        "outbound|9080||reviews.default.svc.cluster.local",
    )];
    let text = wait_for(
        proxy.proxy.envoy_stats_addr,
        "envoy_cluster_upstream_rq_total",
        &cluster,
        3.0,
    )
    .await;
    assert_eq!(
        sample(&text, "envoy_cluster_upstream_rq_retry", &cluster),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "envoy_cluster_upstream_rq_pending_overflow",
            &cluster
        ),
        Some(0.0)
    );
    // The pooled keep-alive connection stays open.
    assert_eq!(
        sample(&text, "envoy_cluster_upstream_cx_active", &cluster),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "envoy_cluster_outlier_detection_ejections_active",
            &cluster
        ),
        Some(0.0)
    );
    assert!(text.contains("# TYPE envoy_cluster_upstream_cx_active gauge\n"));
    assert!(text.contains("istio_requests_total{"), "Istio's stats too");
    assert!(!text.contains("process_cpu_seconds_total"));
    let merged = scrape(proxy.proxy.stats_addr).await;
    assert_eq!(
        sample(&merged, "envoy_cluster_upstream_rq_retry", &cluster),
        Some(2.0)
    );
    assert!(sample(&merged, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(merged.contains("# TYPE process_cpu_seconds_total counter\n"));
}

/// Istio's metrics merging: the app's own metrics (its `prometheus.io/port` and `path`)
/// are served with the proxy's on 15020, not on 15090.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_metrics_are_merged_on_15020() {
    let listener = TcpListener::bind("127.0.0.6:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = [0u8; 1024];
                let n = s.read(&mut head).await.unwrap();
                let ok = String::from_utf8_lossy(&head[..n]).starts_with("GET /custom/metrics ");
                let body =
                    "# TYPE bookinfo_app_requests_total counter\nbookinfo_app_requests_total 7\n";
                let answer = if ok {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".into()
                };
                s.write_all(answer.as_bytes()).await.unwrap();
            });
        }
    });
    let setup = Setup {
        app_metrics: Some(weft_proxy::admin::AppMetrics {
            addr: app,
            path: "/custom/metrics".into(),
        }),
        ..Setup::default()
    };
    let proxy = TestProxy::start_with("", setup).await;
    let merged = scrape(proxy.proxy.stats_addr).await;
    assert_eq!(
        sample(&merged, "bookinfo_app_requests_total", &[]),
        Some(7.0),
        "{merged}"
    );
    assert!(merged.contains("istio_build{"), "{merged}");
    let envoy = scrape(proxy.proxy.envoy_stats_addr).await;
    assert!(!envoy.contains("bookinfo_app_requests_total"), "{envoy}");
}

/// Istio's "Customizing Istio Metrics" task (a tag from `request.host`, another from
/// `string(destination.port)`, one removed, a metric turned off) and an access-log filter
/// that keeps failures only, from one mesh-wide Telemetry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_overrides_change_labels_turn_metrics_off_and_filter_the_access_log() {
    let v1 = Backend::start("127.0.0.2", "v1", ok()).await;
    let telemetry = "---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}
      tagOverrides:
        request_host: {value: request.host}
        destination_port: {value: string(destination.port)}
        request_protocol: {operation: REMOVE}
    - match: {metric: REQUEST_DURATION}
      disabled: true
    - match: {metric: RESPONSE_SIZE, mode: SERVER}
      disabled: true
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: 'response.code >= 400'}
";
    let yaml = service_yaml("reviews", 9080, &[("v1", &v1)])
        + &subsets_yaml("reviews", &["v1", "v3"], "")
        + &reviews_routes(
            "  - match:
    - uri: {prefix: /missing}
    route:
    - destination: {host: reviews, subset: v3}
  - route:
    - destination: {host: reviews, subset: v1}
",
        )
        + telemetry;
    let mut proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    for _ in 0..2 {
        assert_eq!(c.served("reviews:9080", "/reviews/0", &[]).await, "v1");
    }
    assert_eq!(c.get("reviews:9080", "/missing", &[]).await.status, 503);
    let port = proxy.proxy.outbound_addr.port().to_string();
    let labels = [
        ("destination_version", "v1"),
        ("response_code", "200"),
        ("request_host", "reviews:9080"),
        ("destination_port", port.as_str()),
    ];
    let text = wait_for(proxy.proxy.stats_addr, "istio_requests_total", &labels, 2.0).await;
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert!(
        requests.iter().all(|l| !l.contains("request_protocol=")),
        "{text}"
    );
    assert!(
        !text.contains("istio_request_duration_milliseconds_bucket"),
        "{text}"
    );
    // The other metrics keep Istio's labels, and SERVER's override leaves the client alone.
    let sent = [("destination_version", "v1"), ("request_protocol", "http")];
    assert_eq!(
        sample(&text, "istio_response_bytes_count", &sent),
        Some(2.0)
    );
    assert_eq!(sample(&text, "istio_request_bytes_count", &sent), Some(2.0));
    // Only the failure is logged.
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), proxy.log.recv())
        .await
        .expect("the failure is logged")
        .unwrap();
    assert_eq!((line.status, line.path.as_str()), (503, "/missing"));
    assert!(proxy.log.try_recv().is_err(), "a 200 was logged");
}

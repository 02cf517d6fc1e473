//! Config changes under load: swapped atomically, never dropping a request; bad config
//! rejected while the last good one keeps serving. Plus the admin and health ports.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn route_all_to(version: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {version}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_request() {
    let v1 = Backend::start(
        "127.0.0.2",
        "v1",
        Arc::new(|_| (200, Some(Duration::from_millis(5)))),
    )
    .await;
    let v2 = Backend::start(
        "127.0.0.3",
        "v2",
        Arc::new(|_| (200, Some(Duration::from_millis(5)))),
    )
    .await;
    let base = service_yaml("reviews", 9080, &[("v1", &v1), ("v2", &v2)])
        + &subsets_yaml("reviews", &["v1", "v2"], "");
    let proxy = TestProxy::start(&(base.clone() + &route_all_to("v1"))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (c, stop, failures, total) = (
            proxy.client(),
            stop.clone(),
            failures.clone(),
            total.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let a = c.get("reviews:9080", "/", &[]).await;
                total.fetch_add(1, Ordering::Relaxed);
                if a.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for round in 0..10 {
        let version = if round % 2 == 0 { "v2" } else { "v1" };
        let status = proxy
            .reconfigure(&(base.clone() + &route_all_to(version)))
            .await;
        assert_eq!(status.last_error, None);
        // The new version is live as soon as it is acknowledged.
        assert_eq!(
            proxy
                .client()
                .get("reviews:9080", "/", &[])
                .await
                .served_by(),
            version
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert!(
        total.load(Ordering::Relaxed) > 100,
        "load ran: {}",
        total.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_rejected_and_the_last_good_one_keeps_serving() {
    let v1 = Backend::start("127.0.0.2", "v1", ok()).await;
    let base = service_yaml("reviews", 9080, &[("v1", &v1)]);
    let proxy = TestProxy::start(&base).await;
    let c = proxy.client();
    assert_eq!(c.get("reviews:9080", "/", &[]).await.status, 200);
    let bad = base.clone()
        + "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: lots\n";
    let status = proxy.reconfigure(&bad).await;
    assert_eq!(status.rejected, 1);
    let error = status.last_error.unwrap();
    assert!(
        error.contains("mesh.yaml")
            && error.contains("VirtualService default/reviews")
            && error.contains("spec.http[0].route[0].weight"),
        "{error}"
    );
    assert_eq!(
        c.get("reviews:9080", "/", &[]).await.status,
        200,
        "the last good config still serves"
    );
    let dump = weft_proxy::admin::config_dump(&proxy.proxy.config);
    assert_eq!(dump["version"], 1);
    assert_eq!(dump["rejected"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_survive_a_reload() {
    let v1 = Backend::start("127.0.0.2", "v1", ok()).await;
    let v2 = Backend::start("127.0.0.3", "v2", ok()).await;
    let base = service_yaml("reviews", 9080, &[("v1", &v1), ("v2", &v2)])
        + &subsets_yaml("reviews", &["v1", "v2"], "");
    let proxy = TestProxy::start(&(base.clone() + &route_all_to("v1"))).await;
    // One keep-alive connection, used before and after the reload.
    let stream = tokio::net::TcpStream::connect(proxy.proxy.outbound_addr)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::builder()
            .uri("/")
            .header("host", "reviews:9080")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(
        send.send_request(get()).await.unwrap().headers()["x-served-by"],
        "v1"
    );
    proxy.reconfigure(&(base + &route_all_to("v2"))).await;
    assert_eq!(
        send.send_request(get()).await.unwrap().headers()["x-served-by"],
        "v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_health_ports_answer() {
    let v1 = Backend::start("127.0.0.2", "v1", ok()).await;
    let proxy = TestProxy::start(&service_yaml("reviews", 9080, &[("v1", &v1)])).await;
    let health = HttpClient::new(proxy.proxy.health_addr);
    let admin = HttpClient::new(proxy.proxy.admin_addr);
    let direct = |c: &HttpClient| c.proxy.to_string();
    assert_eq!(
        health
            .get(&direct(&health), "/healthz/ready", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        admin.get(&direct(&admin), "/ready", &[]).await.text(),
        "LIVE\n"
    );
    let dump: serde_json::Value =
        serde_json::from_slice(&admin.get(&direct(&admin), "/config_dump", &[]).await.body)
            .unwrap();
    assert_eq!(
        dump["clusters"][0]["name"],
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert_eq!(dump["routes"][0]["name"], "9080");
    assert_eq!(dump["workload"]["labels"]["app"], "productpage");
    let logging = admin
        .send(
            "POST",
            &direct(&admin),
            "/logging?level=debug",
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(
        logging.status, 501,
        "tests run without a reloadable subscriber"
    );
    let quit = proxy.proxy.quit.clone();
    let notified = tokio::spawn(async move { quit.notified().await });
    assert_eq!(
        admin
            .send(
                "POST",
                &direct(&admin),
                "/quitquitquit",
                &[],
                bytes::Bytes::new()
            )
            .await
            .status,
        200
    );
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_first_config() {
    let mut opts = weft_proxy::ProxyOptions::istio_defaults(Default::default());
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    opts.bind_all(any);
    let proxy = weft_proxy::Proxy::start(opts).await.unwrap();
    let health = HttpClient::new(proxy.health_addr);
    assert_eq!(
        health
            .get(&proxy.health_addr.to_string(), "/healthz/ready", &[])
            .await
            .status,
        503
    );
    proxy.config.apply(Vec::new()).await.unwrap();
    assert_eq!(
        health
            .get(&proxy.health_addr.to_string(), "/healthz/ready", &[])
            .await
            .status,
        200
    );
}

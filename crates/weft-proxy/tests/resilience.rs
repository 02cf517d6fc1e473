//! Retries, timeouts, faults, circuit breaking and outlier detection, answered with Envoy's
//! status codes and response flags.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::time::Instant;
use weft_proxy::telemetry::access_log::Flags;

fn vs(http: &str) -> String {
    virtual_service("ratings", http)
}

async fn one(behaviour: Behaviour) -> Backend {
    Backend::start("127.0.0.2", "v1", behaviour).await
}

#[tokio::test]
async fn fault_delay_and_abort_with_percentages() {
    // One runtime thread and a fixed seed make the proxy's draws repeat run to run.
    fastrand::seed(12);
    let b = one(ok()).await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &b)])
        + &vs("  - match:
    - headers:
        end-user: {exact: jason}
    fault:
      delay:
        fixedDelay: 300ms
        percentage: {value: 100}
    route:
    - destination: {host: ratings}
  - match:
    - uri: {prefix: /abort}
    fault:
      abort:
        httpStatus: 500
        percentage: {value: 50}
    route:
    - destination: {host: ratings}
  - match:
    - uri: {prefix: /legacy}
    fault:
      delay:
        fixedDelay: 200ms
        percent: 100
    route:
    - destination: {host: ratings}
");
    let mut proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    let started = Instant::now();
    let a = c.get("ratings:9080", "/", &[("end-user", "jason")]).await;
    assert_eq!(a.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(proxy.log.recv().await.unwrap().flags, Flags::DI);

    let started = Instant::now();
    c.get("ratings:9080", "/legacy", &[]).await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "deprecated integer percent honoured"
    );
    proxy.log.recv().await.unwrap();

    let mut aborted = 0;
    for _ in 0..1000 {
        let a = c.get("ratings:9080", "/abort", &[]).await;
        if a.status == 500 {
            assert_eq!(a.text(), "fault filter abort");
            aborted += 1;
        }
    }
    // p=0.5 over 1000: sd ≈ 1.6 points; ±6 points is nearly 4 sd.
    assert!((440..=560).contains(&aborted), "{aborted} of 1000 aborted");
    let flags: Vec<Flags> = std::iter::from_fn(|| proxy.log.try_recv().ok())
        .map(|e| e.flags)
        .collect();
    assert_eq!(
        flags.iter().filter(|f| f.contains(Flags::FI)).count(),
        aborted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_without_percentage_applies_to_no_request() {
    // Istio hands Envoy's fault filter an unset fraction, which is 0 %.
    let b = one(ok()).await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &b)])
        + &vs("  - fault:
      delay:
        fixedDelay: 5s
      abort:
        httpStatus: 500
    route:
    - destination: {host: ratings}
");
    let mut proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(c.get("ratings:9080", "/", &[]).await.status, 200);
        assert_eq!(proxy.log.recv().await.unwrap().flags, Flags::default());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no request delayed"
    );
    assert_eq!(b.hits(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_retries_do_not_retry_a_503_and_each_try_counts_its_attempt() {
    // Istio 1.24+: retryOn connect-failure,refused-stream,unavailable,cancelled,
    // retriable-status-codes with no status codes, also for `retries` without `retryOn`.
    let broken = one(Arc::new(|_| (503, None))).await;
    let proxy = TestProxy::start(&service_yaml("ratings", 9080, &[("v1", &broken)])).await;
    assert_eq!(
        proxy.client().get("ratings:9080", "/", &[]).await.status,
        503
    );
    assert_eq!(broken.hits(), 1, "a 503 is not retried by default");
    let seen = broken.seen.lock().unwrap()[0].headers.clone();
    assert_eq!(seen["x-envoy-attempt-count"], "1");

    let broken = Backend::start("127.0.0.3", "v1", Arc::new(|_| (503, None))).await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &broken)])
        + &vs("  - route:
    - destination: {host: ratings}
    retries:
      attempts: 3
");
    proxy.reconfigure(&yaml).await;
    assert_eq!(
        proxy.client().get("ratings:9080", "/", &[]).await.status,
        503
    );
    assert_eq!(
        broken.hits(),
        1,
        "attempts without retryOn keeps the default conditions"
    );

    // Fails the first two tries with 503, then recovers: retryOn 503 hides it.
    let flaky = Backend::start(
        "127.0.0.4",
        "v1",
        Arc::new(|n| (if n < 2 { 503 } else { 200 }, None)),
    )
    .await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &flaky)])
        + &vs("  - route:
    - destination: {host: ratings}
    retries:
      attempts: 2
      retryOn: \"503\"
");
    proxy.reconfigure(&yaml).await;
    let a = proxy
        .client()
        .get("ratings:9080", "/", &[("x-envoy-attempt-count", "7")])
        .await;
    assert_eq!(a.status, 200);
    let counts: Vec<String> = flaky
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|p| {
            p.headers["x-envoy-attempt-count"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(counts, ["1", "2", "3"], "Envoy numbers each try upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_limit_and_500_is_not_retriable_by_default() {
    let broken = Backend::start("127.0.0.3", "v1", Arc::new(|_| (503, None))).await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &broken)])
        + &vs("  - route:
    - destination: {host: ratings}
    retries:
      attempts: 3
      retryOn: 5xx
");
    let mut proxy = TestProxy::start(&yaml).await;
    let a = proxy.client().get("ratings:9080", "/", &[]).await;
    assert_eq!(a.status, 503);
    assert_eq!(broken.hits(), 4, "one try and three retries");
    assert_eq!(proxy.log.recv().await.unwrap().flags, Flags::URX);

    // 500 is not retriable under Istio's default policy.
    let failing = Backend::start("127.0.0.4", "v1", Arc::new(|_| (500, None))).await;
    let proxy = TestProxy::start(&service_yaml("ratings", 9080, &[("v1", &failing)])).await;
    assert_eq!(
        proxy.client().get("ratings:9080", "/", &[]).await.status,
        500
    );
    assert_eq!(failing.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_retry_on_another_endpoint_then_answer_503_uf() {
    let good = one(ok()).await;
    // A port with nothing listening: bind, note the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.5:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: dead\nspec:\n  address: 127.0.0.5\n  labels: {{app: ratings, version: v2}}\n  ports: {{http: {}}}\n",
        service_yaml("ratings", 9080, &[("v1", &good)]),
        dead.port()
    );
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    for _ in 0..20 {
        assert_eq!(
            c.get("ratings:9080", "/", &[]).await.status,
            200,
            "a connect failure is retried elsewhere"
        );
    }
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ratings\nspec:\n  selector: {{app: ratings}}\n  ports:\n  - {{name: http, port: 9080}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: dead\nspec:\n  address: 127.0.0.5\n  labels: {{app: ratings}}\n  ports: {{http: {}}}\n",
        dead.port()
    );
    let mut proxy = TestProxy::start(&yaml).await;
    let a = proxy.client().get("ratings:9080", "/", &[]).await;
    assert_eq!(a.status, 503);
    assert!(a.text().contains("connection failure"), "{}", a.text());
    let hint = a.headers["x-weft-error"].to_str().unwrap();
    assert!(
        hint.contains("127.0.0.5") && hint.contains("is the workload running?"),
        "{hint}"
    );
    assert_eq!(
        proxy.log.recv().await.unwrap().flags,
        Flags::UF | Flags::URX
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_answers_504_ut_and_per_try_timeout_retries() {
    let slow = one(Arc::new(|n| {
        (200, (n == 0).then_some(Duration::from_secs(3)))
    }))
    .await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &slow)])
        + &vs("  - match:
    - uri: {prefix: /per-try}
    route:
    - destination: {host: ratings}
    retries:
      attempts: 2
      perTryTimeout: 200ms
      retryOn: gateway-error,connect-failure
  - route:
    - destination: {host: ratings}
    timeout: 300ms
");
    let mut proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    let started = Instant::now();
    let a = c.get("ratings:9080", "/per-try", &[]).await;
    assert_eq!(a.status, 200, "the slow first try is abandoned and retried");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    proxy.log.recv().await.unwrap();

    let always_slow = Backend::start(
        "127.0.0.3",
        "v1",
        Arc::new(|_| (200, Some(Duration::from_secs(3)))),
    )
    .await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &always_slow)])
        + &vs("  - route:
    - destination: {host: ratings}
    timeout: 300ms
");
    proxy.reconfigure(&yaml).await;
    let started = Instant::now();
    let a = c.get("ratings:9080", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(
        (a.status.as_u16(), a.text().as_str()),
        (504, "upstream request timeout")
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(proxy.log.recv().await.unwrap().flags, Flags::UT);

    // The request header overrides the route's timeout, as in Envoy.
    let started = Instant::now();
    let a = c
        .get(
            "ratings:9080",
            "/",
            &[("x-envoy-upstream-rq-timeout-ms", "100")],
        )
        .await;
    assert_eq!(a.status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pool_overflow_answers_503_uo() {
    let slow = one(Arc::new(|_| (200, Some(Duration::from_millis(500))))).await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &slow)])
        + &subsets_yaml(
            "ratings",
            &[],
            "  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}\n",
        );
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.get("ratings:9080", "/", &[]).await })
        })
        .collect();
    let mut ok = 0;
    let mut overflow = 0;
    for call in calls {
        let a = call.await.unwrap();
        match a.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert!(a.text().contains("overflow"), "{}", a.text());
                overflow += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    // One in flight and one pending fit; the rest overflow at once.
    assert_eq!((ok, overflow), (2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_returns_it() {
    let good = Backend::start("127.0.0.2", "good", ok()).await;
    let bad = Backend::start("127.0.0.3", "bad", Arc::new(|_| (500, None))).await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &good), ("v2", &bad)])
        + &subsets_yaml(
            "ratings",
            &[],
            "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection:\n      consecutive5xxErrors: 2\n      interval: 1s\n      baseEjectionTime: 1s\n      maxEjectionPercent: 100\n",
        );
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    for _ in 0..6 {
        c.get("ratings:9080", "/", &[]).await;
    }
    assert_eq!(bad.hits(), 2, "ejected after two consecutive 5xx");
    let ejected_at = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.served("ratings:9080", "/", &[]).await, "good");
    }
    assert_eq!(bad.hits(), 2);
    let dump = weft_proxy::admin::config_dump(&proxy.proxy.config);
    let statuses: Vec<String> = dump["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["status"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(statuses.contains(&"UNHEALTHY".to_string()), "{statuses:?}");
    // After baseEjectionTime, at the next interval sweep, the endpoint takes traffic again.
    let deadline = ejected_at + Duration::from_secs(4);
    while bad.hits() == 2 {
        assert!(
            Instant::now() < deadline,
            "never returned after its ejection time"
        );
        c.get("ratings:9080", "/", &[]).await;
        // Pace the polling: one request per 10 ms is plenty to notice the return.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back_after = ejected_at.elapsed();
    assert!(
        back_after >= Duration::from_millis(900),
        "returned early: {back_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoints_is_503_uh_and_an_undefined_subset_names_itself() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ratings\nspec:\n  selector: {app: ratings}\n  ports:\n  - {name: http, port: 9080}\n---\n".to_string()
        + &vs("  - match:
    - uri: {prefix: /v4}
    route:
    - destination: {host: ratings, subset: v4}
  - route:
    - destination: {host: ratings}
");
    let mut proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    let a = c.get("ratings:9080", "/", &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.text().as_str()),
        (503, "no healthy upstream")
    );
    assert_eq!(proxy.log.recv().await.unwrap().flags, Flags::UH);
    let a = c.get("ratings:9080", "/v4", &[]).await;
    assert_eq!(a.status, 503);
    let hint = a.headers["x-weft-error"].to_str().unwrap();
    assert!(
        hint.contains("subset \"v4\"") && hint.contains("IST0101"),
        "{hint}"
    );
    assert_eq!(proxy.log.recv().await.unwrap().flags, Flags::NC);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_also_bounds_a_slow_response_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Headers at once, then three of ten promised bytes, then nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                    .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ratings\nspec:\n  selector: {{app: ratings}}\n  ports:\n  - {{name: http, port: 9080}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: r\nspec:\n  address: 127.0.0.2\n  labels: {{app: ratings}}\n  ports: {{http: {}}}\n---\n",
        addr.port()
    ) + &vs("  - route:
    - destination: {host: ratings}
    timeout: 300ms
");
    let mut proxy = TestProxy::start(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(proxy.proxy.outbound_addr)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: ratings:9080\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got))
        .await
        .expect("the proxy cuts the stream");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("abc"),
        "{text}"
    );
    assert!(proxy.log.recv().await.unwrap().flags.contains(Flags::UT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_until_max_requests_per_connection() {
    let pooled = one(ok()).await;
    let proxy = TestProxy::start(&service_yaml("ratings", 9080, &[("v1", &pooled)])).await;
    let c = proxy.client();
    for _ in 0..9 {
        assert_eq!(c.get("ratings:9080", "/", &[]).await.status, 200);
    }
    let connections = pooled.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        connections < 9,
        "keep-alive connections are reused: {connections} for 9 requests"
    );

    let capped = Backend::start("127.0.0.3", "v1", ok()).await;
    let yaml = service_yaml("ratings", 9080, &[("v1", &capped)])
        + &subsets_yaml(
            "ratings",
            &[],
            "  trafficPolicy:\n    connectionPool:\n      http: {maxRequestsPerConnection: 3}\n",
        );
    proxy.reconfigure(&yaml).await;
    for _ in 0..9 {
        assert_eq!(c.get("ratings:9080", "/", &[]).await.status, 200);
    }
    let most = capped
        .most_per_connection
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (2..=3).contains(&most),
        "connections are reused, never past 3 requests: {most}"
    );
    assert!(capped.connections.load(std::sync::atomic::Ordering::SeqCst) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_ignore_previous_hosts_picks_the_retry_endpoint_as_istio() {
    // Both endpoints fail; the request is hashed onto one of them, so where its retry goes
    // shows the policy: true → another endpoint; false, or unset on a hashed request
    // (Istio's DefaultConsistentHashPolicy) → the same one.
    let a = Backend::start("127.0.0.2", "a", Arc::new(|_| (503, None))).await;
    let b = Backend::start("127.0.0.3", "b", Arc::new(|_| (503, None))).await;
    let hashed = subsets_yaml(
        "ratings",
        &[],
        "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n",
    );
    let base = service_yaml("ratings", 9080, &[("v1", &a), ("v2", &b)]) + &hashed;
    let routes = |ignore: &str| {
        vs(&format!(
            "  - route:\n    - destination: {{host: ratings}}\n    retries: {{attempts: 1, retryOn: \"503\"{ignore}}}\n"
        ))
    };
    let proxy = TestProxy::start(&base).await;
    for (ignore, same) in [
        ("", true),
        (", retryIgnorePreviousHosts: false", true),
        (", retryIgnorePreviousHosts: true", false),
    ] {
        proxy.reconfigure(&(base.clone() + &routes(ignore))).await;
        let before = (a.hits(), b.hits());
        let answer = proxy
            .client()
            .get("ratings:9080", "/", &[("x-user", "jason")])
            .await;
        assert_eq!(answer.status, 503);
        let tries = (a.hits() - before.0, b.hits() - before.1);
        let on_one = tries == (2, 0) || tries == (0, 2);
        assert_eq!(on_one, same, "{ignore:?}: tries per endpoint {tries:?}");
        assert_eq!(tries.0 + tries.1, 2);
    }
}

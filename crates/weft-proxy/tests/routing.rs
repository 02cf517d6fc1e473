//! Istio's routing semantics on real sockets.

mod support;

use bytes::Bytes;
use support::*;
use weft_proxy::telemetry::access_log::{Flags, ISTIO_TEXT};

async fn reviews(versions: &[&'static str]) -> Vec<Backend> {
    let mut out = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        out.push(Backend::start(&format!("127.0.0.{}", i + 2), v, ok()).await);
    }
    out
}

fn reviews_config(backends: &[Backend], versions: &[&str], vs: &str) -> String {
    let pairs: Vec<(&str, &Backend)> = versions.iter().copied().zip(backends.iter()).collect();
    format!(
        "{}{}{vs}",
        service_yaml("reviews", 9080, &pairs),
        subsets_yaml("reviews", versions, "")
    )
}

const JASON_TO_V2: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination: {host: reviews, subset: v2}
  - name: everyone-else
    route:
    - destination: {host: reviews, subset: v1}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_match_sends_jason_to_v2_and_everyone_else_to_v1() {
    let b = reviews(&["v1", "v2"]).await;
    let proxy = TestProxy::start(&reviews_config(&b, &["v1", "v2"], JASON_TO_V2)).await;
    let c = proxy.client();
    for _ in 0..10 {
        assert_eq!(
            c.served("reviews:9080", "/reviews/0", &[("end-user", "jason")])
                .await,
            "v2"
        );
        assert_eq!(
            c.served("reviews:9080", "/reviews/0", &[("end-user", "bob")])
                .await,
            "v1"
        );
        assert_eq!(
            c.served("reviews.default.svc.cluster.local:9080", "/", &[])
                .await,
            "v1"
        );
    }
}

#[tokio::test]
async fn weights_split_90_10_within_3_points() {
    // One runtime thread and a fixed seed make the proxy's draws repeat run to run.
    fastrand::seed(12);
    let b = reviews(&["v1", "v2"]).await;
    let vs = &reviews_routes(
        "  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
",
    );
    let proxy = TestProxy::start(&reviews_config(&b, &["v1", "v2"], vs)).await;
    let c = proxy.client();
    let mut answers = Vec::new();
    for _ in 0..2000 {
        answers.push(c.get("reviews:9080", "/", &[]).await);
    }
    let t = tally(&answers);
    let v2 = *t.get("v2").unwrap_or(&0) as f64 / 20.0;
    // 2000 draws at p=0.1: sd ≈ 0.67 points, so ±3 points is over 4 sd.
    assert!((v2 - 10.0).abs() <= 3.0, "v2 got {v2}% ({t:?})");
    assert_eq!(t.values().sum::<usize>(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_virtual_service_traffic_reaches_every_endpoint() {
    let b = reviews(&["v1", "v2", "v3"]).await;
    let proxy = TestProxy::start(&reviews_config(&b, &["v1", "v2", "v3"], "")).await;
    let c = proxy.client();
    let mut answers = Vec::new();
    for _ in 0..300 {
        answers.push(c.get("reviews:9080", "/", &[]).await);
    }
    let t = tally(&answers);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(t.values().all(|n| *n > 50), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404_nr_and_unknown_hosts_are_blocked() {
    let b = reviews(&["v1"]).await;
    let vs = &reviews_routes(
        "  - match:
    - uri: {prefix: /reviews}
    route:
    - destination: {host: reviews}
",
    );
    let mut proxy = TestProxy::start(&reviews_config(&b, &["v1"], vs)).await;
    let c = proxy.client();
    let a = c.get("reviews:9080", "/other", &[]).await;
    assert_eq!(a.status, 404);
    let entry = proxy.log.recv().await.unwrap();
    assert_eq!(entry.flags, Flags::NR);
    assert_eq!(
        entry
            .line(&weft_proxy::telemetry::access_log::ISTIO_TEXT)
            .split(" ")
            .nth(5),
        Some("NR")
    );

    let blocked = c.get("httpbin.org", "/get", &[]).await;
    assert_eq!(blocked.status, 502);
    assert!(
        blocked.text().contains("httpbin.org") && blocked.text().contains("REGISTRY_ONLY"),
        "{}",
        blocked.text()
    );
    let entry = proxy.log.recv().await.unwrap();
    assert_eq!(entry.upstream_cluster.as_deref(), Some("BlackHoleCluster"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_direct_response_rewrite_and_header_operations() {
    let b = reviews(&["v1"]).await;
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {exact: /old}
    redirect: {uri: /new, authority: elsewhere.example}
  - match:
    - uri: {prefix: /teapot}
    directResponse:
      status: 418
      body: {string: "short and stout"}
  - match:
    - uri: {prefix: /api/}
    rewrite: {uri: /v2/}
    headers:
      request:
        set: {x-route: api}
        remove: [x-drop-me]
      response:
        add: {x-answered: "yes"}
    route:
    - destination: {host: reviews}
      headers:
        request:
          add: {x-destination: v1}
  - match:
    - uri: {regex: "/items/[0-9]+"}
      method: {exact: DELETE}
    route:
    - destination: {host: reviews}
"#;
    let proxy = TestProxy::start(&reviews_config(&b, &["v1"], vs)).await;
    let c = proxy.client();
    let r = c.get("reviews:9080", "/old?q=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "http://elsewhere.example/new?q=1");

    let d = c.get("reviews:9080", "/teapot", &[]).await;
    assert_eq!(
        (d.status.as_u16(), d.text().as_str()),
        (418, "short and stout")
    );

    let a = c
        .get("reviews:9080", "/api/items?x=1", &[("x-drop-me", "1")])
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-seen-path"], "/v2/items?x=1");
    assert_eq!(a.headers["x-answered"], "yes");
    let seen = b[0].seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-route"], "api");
    assert_eq!(seen.headers["x-destination"], "v1");
    assert!(seen.headers.get("x-drop-me").is_none());
    assert!(
        seen.headers.get("x-request-id").is_some(),
        "Envoy adds x-request-id"
    );

    assert_eq!(
        c.send("DELETE", "reviews:9080", "/items/42", &[], Bytes::new())
            .await
            .status,
        200
    );
    assert_eq!(c.get("reviews:9080", "/items/42", &[]).await.status, 404);
    assert_eq!(
        c.send("DELETE", "reviews:9080", "/items/4x", &[], Bytes::new())
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_params_without_headers_and_ignore_uri_case() {
    let b = reviews(&["v1", "v2"]).await;
    let vs = &reviews_routes(
        "  - match:
    - queryParams:
        canary: {exact: \"true\"}
      withoutHeaders:
        x-legacy: {}
    - uri: {prefix: /CANARY}
      ignoreUriCase: true
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
",
    );
    let proxy = TestProxy::start(&reviews_config(&b, &["v1", "v2"], vs)).await;
    let c = proxy.client();
    assert_eq!(c.served("reviews:9080", "/?canary=true", &[]).await, "v2");
    assert_eq!(
        c.served("reviews:9080", "/?canary=true", &[("x-legacy", "1")])
            .await,
        "v1"
    );
    assert_eq!(c.served("reviews:9080", "/?canary=false", &[]).await, "v1");
    assert_eq!(c.served("reviews:9080", "/canary/x", &[]).await, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_requests_never_affect_the_caller() {
    let b = reviews(&["v1"]).await;
    let mirror = Backend::start(
        "127.0.0.9",
        "mirror",
        std::sync::Arc::new(|_| (500, Some(std::time::Duration::from_secs(2)))),
    )
    .await;
    let mut yaml = reviews_config(&b, &["v1"], "");
    yaml.push_str(&service_yaml("shadow", 9080, &[("v1", &mirror)]));
    yaml.push_str(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    mirror: {host: shadow}
    mirrorPercentage: {value: 100}
",
    );
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    let started = tokio::time::Instant::now();
    let a = c.get("reviews:9080", "/m", &[]).await;
    assert_eq!((a.status.as_u16(), a.served_by()), (200, "v1"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "the slow, failing mirror must not delay the caller"
    );
    // The mirror got its copy, marked as a shadow.
    for _ in 0..100 {
        if mirror.hits() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(mirror.hits(), 1);
    let seen = mirror.seen.lock().unwrap();
    // The backend records the request after its delay; wait on the hit counter above instead.
    drop(seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_by_the_proxy() {
    let b = reviews(&["v1"]).await;
    let vs = &reviews_routes(
        "  - route:
    - destination: {host: reviews}
    corsPolicy:
      allowOrigins:
      - exact: https://shop.example
      allowMethods: [GET, POST]
      maxAge: 24h
",
    );
    let proxy = TestProxy::start(&reviews_config(&b, &["v1"], vs)).await;
    let c = proxy.client();
    let pre = c
        .send(
            "OPTIONS",
            "reviews:9080",
            "/",
            &[
                ("origin", "https://shop.example"),
                ("access-control-request-method", "POST"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(pre.status, 200);
    assert_eq!(
        pre.headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(pre.headers["access-control-allow-methods"], "GET,POST");
    assert_eq!(pre.headers["access-control-max-age"], "86400");
    assert_eq!(b[0].hits(), 0, "a matching preflight never reaches the app");
    let actual = c
        .get("reviews:9080", "/", &[("origin", "https://shop.example")])
        .await;
    assert_eq!(
        actual.headers["access-control-allow-origin"],
        "https://shop.example"
    );
    let other = c
        .get("reviews:9080", "/", &[("origin", "https://evil.example")])
        .await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_names_route_cluster_and_upstream() {
    let b = reviews(&["v1", "v2"]).await;
    let mut proxy = TestProxy::start(&reviews_config(&b, &["v1", "v2"], JASON_TO_V2)).await;
    let c = proxy.client();
    c.get(
        "reviews:9080",
        "/reviews/1",
        &[("end-user", "jason"), ("user-agent", "test-agent")],
    )
    .await;
    let line = proxy.log.recv().await.unwrap().line(&ISTIO_TEXT);
    assert!(
        line.contains("\"GET /reviews/1 HTTP/1.1\" 200 - via_upstream"),
        "{line}"
    );
    assert!(
        line.contains("outbound|9080|v2|reviews.default.svc.cluster.local"),
        "{line}"
    );
    assert!(line.contains(&b[1].addr.to_string()), "{line}");
    assert!(
        line.contains("\"test-agent\"") && line.ends_with(" jason\n"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_rewrites_take_the_route_before_the_destination() {
    // Istio's "set host header in route and (multi) destination" cases: the route's
    // rewrite.authority or headers.request authority wins on every destination.
    let b = reviews(&["v1", "v2"]).await;
    let vs = &reviews_routes(
        "  - match:
    - uri: {prefix: /rewrite}
    rewrite: {authority: new-authority}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
      headers:
        request:
          set: {Host: dest-authority}
    - destination: {host: reviews, subset: v2}
      weight: 50
  - match:
    - uri: {prefix: /route-header}
    headers:
      request:
        set: {\":authority\": route-authority}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
      headers:
        request:
          set: {Host: dest-authority}
    - destination: {host: reviews, subset: v2}
      weight: 50
  - match:
    - uri: {prefix: /single}
    headers:
      request:
        add: {Host: route-authority}
    route:
    - destination: {host: reviews, subset: v1}
      headers:
        request:
          set: {\":authority\": dest-authority}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
      headers:
        request:
          set: {Host: dest-authority}
    - destination: {host: reviews, subset: v2}
      weight: 50
      headers:
        request:
          add: {\":authority\": dest-authority}
",
    );
    let proxy = TestProxy::start(&reviews_config(&b, &["v1", "v2"], vs)).await;
    let c = proxy.client();
    for (path, want) in [
        ("/rewrite", "new-authority"),
        ("/route-header", "route-authority"),
        ("/single", "route-authority"),
        ("/dest", "dest-authority"),
    ] {
        let mut served = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let a = c.get("reviews:9080", path, &[]).await;
            assert_eq!(
                a.headers["x-seen-host"],
                want,
                "{path} on {}",
                a.served_by()
            );
            served.insert(a.served_by().to_string());
        }
        if path != "/single" {
            // 40 draws at 50/50 miss a destination with probability 2^-39.
            assert_eq!(served.len(), 2, "{path}: {served:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_rewrite_without_a_uri_match_replaces_the_implicit_slash() {
    let b = reviews(&["v1"]).await;
    let vs = &reviews_routes(
        "  - match:
    - headers:
        x-api: {exact: \"1\"}
    rewrite: {uri: /v1/}
    route:
    - destination: {host: reviews}
  - rewrite: {uri: /v2/}
    route:
    - destination: {host: reviews}
",
    );
    let proxy = TestProxy::start(&reviews_config(&b, &["v1"], vs)).await;
    let c = proxy.client();
    let a = c.get("reviews:9080", "/x/y?q=1", &[("x-api", "1")]).await;
    assert_eq!(a.headers["x-seen-path"], "/v1/x/y?q=1");
    let a = c.get("reviews:9080", "/x/y", &[]).await;
    assert_eq!(a.headers["x-seen-path"], "/v2/x/y");
    let seen = b[0].seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-envoy-original-path"], "/x/y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_build_the_location_as_envoy_does() {
    let b = reviews(&["v1"]).await;
    let redirect = |prefix: &str, r: &str| {
        format!("  - match:\n    - uri: {{prefix: {prefix}}}\n    redirect: {r}\n")
    };
    let vs = &reviews_routes(
        &[
            redirect("/uri-only", "{uri: /new}"),
            redirect("/uri-query", "{uri: \"/new?x=2\"}"),
            redirect("/request-port", "{uri: /p, derivePort: FROM_REQUEST_PORT}"),
            redirect(
                "/protocol-default",
                "{uri: /d, derivePort: FROM_PROTOCOL_DEFAULT}",
            ),
            redirect(
                "/elsewhere",
                "{uri: /d, derivePort: FROM_PROTOCOL_DEFAULT, authority: b.example}",
            ),
            redirect("/port", "{port: 8443, scheme: https}"),
            redirect("/eighty", "{port: 80}"),
            redirect("/scheme", "{scheme: https}"),
            redirect("/authority", "{authority: b.example, redirectCode: 302}"),
            redirect("/foo/", "{prefixRewrite: /new/}"),
            redirect("/old/", "{prefixRewrite: /, authority: b.example}"),
        ]
        .concat(),
    );
    // As a captured connection to reviews:9080, so a Host without a port still finds it.
    let captured = Setup {
        orig_dst: std::sync::Arc::new(weft_proxy::transport::orig_dst::FixedOriginalDst(
            "10.96.0.9:9080".parse().unwrap(),
        )),
        ..Setup::default()
    };
    let proxy = TestProxy::start_with(&reviews_config(&b, &["v1"], vs), captured).await;
    let c = proxy.client();
    for (host, path, status, location) in [
        // Only the URI changes: the request's Host, port included, stays.
        (
            "reviews:9080",
            "/uri-only?q=1",
            301,
            "http://reviews:9080/new?q=1",
        ),
        (
            "reviews:9080",
            "/uri-query?q=1",
            301,
            "http://reviews:9080/new?x=2",
        ),
        // FROM_REQUEST_PORT names the port the route serves, even when Host has none.
        ("reviews", "/request-port", 301, "http://reviews:9080/p"),
        // FROM_PROTOCOL_DEFAULT is Envoy's default: no port rewrite, the Host is kept...
        (
            "reviews:9080",
            "/protocol-default",
            301,
            "http://reviews:9080/d",
        ),
        // ...and a new authority comes without one.
        ("reviews:9080", "/elsewhere", 301, "http://b.example/d"),
        ("reviews:9080", "/port", 301, "https://reviews:8443/port"),
        // Istio drops port 80 for http, which leaves the request's Host as it was.
        ("reviews:9080", "/eighty", 301, "http://reviews:9080/eighty"),
        // A new scheme drops the old scheme's default port, not another.
        ("reviews:80", "/scheme", 301, "https://reviews/scheme"),
        (
            "reviews:9080",
            "/scheme",
            301,
            "https://reviews:9080/scheme",
        ),
        (
            "reviews:9080",
            "/authority?a=1",
            302,
            "http://b.example/authority?a=1",
        ),
        // prefixRewrite replaces the matched prefix, keeping the rest and the query.
        (
            "reviews:9080",
            "/foo/bar?x=1",
            301,
            "http://reviews:9080/new/bar?x=1",
        ),
        ("reviews:9080", "/old/a/b", 301, "http://b.example/a/b"),
    ] {
        let a = c.get(host, path, &[]).await;
        assert_eq!(a.status, status, "{host}{path}");
        assert_eq!(a.headers["location"], location, "{host}{path}");
    }
    assert_eq!(b[0].hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_uri_case_folds_exact_and_prefix_but_not_regex() {
    let b = reviews(&["v1", "v2"]).await;
    let vs = &reviews_routes(
        "  - match:
    - uri: {regex: \"/Reg/[a-z]+\"}
      ignoreUriCase: true
    - uri: {exact: /EXACT}
      ignoreUriCase: true
    - uri: {prefix: /PRE}
      ignoreUriCase: true
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
",
    );
    let proxy = TestProxy::start(&reviews_config(&b, &["v1", "v2"], vs)).await;
    let c = proxy.client();
    for (path, want) in [
        ("/exact", "v2"),
        ("/Exact", "v2"),
        ("/pre/x", "v2"),
        ("/Reg/abc", "v2"),
        // Envoy's case_sensitive does not apply to safe_regex.
        ("/reg/abc", "v1"),
        ("/Reg/ABC", "v1"),
    ] {
        assert_eq!(c.served("reviews:9080", path, &[]).await, want, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_matches_take_any_token_and_pseudo_headers() {
    // Istio's "weird header matches" and "pseudo header matches".
    let b = reviews(&["v1", "v2"]).await;
    let vs = &reviews_routes(
        "  - match:
    - headers:
        \"a!#$%&'*+-.^_`|~z\": {exact: why}
    - headers:
        \":method\": {exact: PUT}
    - headers:
        \":authority\": {prefix: reviews.default}
    - headers:
        \":path\": {exact: \"/q?x=1\"}
    - headers:
        \":scheme\": {exact: http}
        x-scheme: {exact: http}
    - headers:
        \":scheme\": {exact: https}
        x-scheme: {exact: https}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
",
    );
    let proxy = TestProxy::start(&reviews_config(&b, &["v1", "v2"], vs)).await;
    let c = proxy.client();
    let weird = "a!#$%&'*+-.^_`|~z";
    assert_eq!(c.served("reviews:9080", "/", &[(weird, "why")]).await, "v2");
    assert_eq!(c.served("reviews:9080", "/", &[(weird, "not")]).await, "v1");
    assert_eq!(c.served("reviews:9080", "/", &[]).await, "v1");
    let put = c.send("PUT", "reviews:9080", "/", &[], Bytes::new()).await;
    assert_eq!(put.served_by(), "v2");
    assert_eq!(
        c.served("reviews.default.svc.cluster.local:9080", "/", &[])
            .await,
        "v2"
    );
    assert_eq!(c.served("reviews:9080", "/q?x=1", &[]).await, "v2");
    assert_eq!(c.served("reviews:9080", "/q?x=2", &[]).await, "v1");
    assert_eq!(
        c.served("reviews:9080", "/", &[("x-scheme", "http")]).await,
        "v2"
    );
    assert_eq!(
        c.served("reviews:9080", "/", &[("x-scheme", "https")])
            .await,
        "v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_headers_test_an_absent_header_as_empty() {
    // Istio's "without headers" cases: Envoy's invert_match with
    // treat_missing_header_as_empty, except `regex: "*"`, which is presence.
    let b = reviews(&["v1"]).await;
    let denied = |prefix: &str, m: &str| {
        format!("  - match:\n    - uri: {{prefix: {prefix}}}\n      withoutHeaders:\n        end-user: {m}\n    directResponse: {{status: 403}}\n")
    };
    let vs = &reviews_routes(
        &[
            denied("/exact", "{exact: jason}"),
            denied("/present", "{regex: \"*\"}"),
            denied("/any", "{regex: \".*\"}"),
            denied("/some", "{regex: \".+\"}"),
            "  - route:\n    - destination: {host: reviews}\n".to_string(),
        ]
        .concat(),
    );
    let proxy = TestProxy::start(&reviews_config(&b, &["v1"], vs)).await;
    let c = proxy.client();
    for (path, jason, empty, absent) in [
        ("/exact", 200, 403, 403),
        ("/present", 200, 200, 403),
        ("/any", 200, 200, 200),
        ("/some", 200, 403, 403),
    ] {
        let status = |h: &'static [(&'static str, &'static str)]| {
            let c = c.clone();
            async move { c.get("reviews:9080", path, h).await.status.as_u16() }
        };
        assert_eq!(
            status(&[("end-user", "jason")]).await,
            jason,
            "{path} jason"
        );
        assert_eq!(status(&[("end-user", "")]).await, empty, "{path} empty");
        assert_eq!(status(&[]).await, absent, "{path} absent");
    }
}

#[tokio::test]
async fn each_of_several_mirrors_gets_its_own_share() {
    // One runtime thread and a fixed seed make the proxy's draws repeat run to run.
    fastrand::seed(12);
    let b = reviews(&["v1"]).await;
    let all = Backend::start("127.0.0.10", "all", ok()).await;
    let half = Backend::start("127.0.0.11", "half", ok()).await;
    let mut yaml = reviews_config(&b, &["v1"], "");
    yaml.push_str(&service_yaml("shadow-all", 9080, &[("v1", &all)]));
    yaml.push_str(&service_yaml("shadow-half", 9080, &[("v1", &half)]));
    yaml.push_str(&reviews_routes(
        "  - route:
    - destination: {host: reviews}
    mirrors:
    - destination: {host: shadow-all}
    - destination: {host: shadow-half}
      percentage: {value: 50}
",
    ));
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    const N: usize = 400;
    for _ in 0..N {
        assert_eq!(c.get("reviews:9080", "/m", &[]).await.served_by(), "v1");
    }
    // 400 draws at p=0.5: sd = 10, so 150..=250 is 5 sd either way.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while all.hits() < N || half.hits() < 150 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mirrors got {} and {} of {N}",
            all.hits(),
            half.hits()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(all.hits(), N, "no percentage mirrors every request");
    assert!(half.hits() <= 250, "half got {} of {N}", half.hits());
    let seen = all.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["host"], "reviews-shadow:9080");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_rule_with_a_workload_selector_applies_to_the_pods_it_selects() {
    let b = reviews(&["v1", "v2"]).await;
    // Subset `chosen` is v1 for the namespace, v2 for productpage's pods.
    let rule = |name: &str, version: &str, selector: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\nspec:\n{selector}  host: reviews\n  subsets:\n  - name: chosen\n    labels:\n      version: {version}\n---\n")
    };
    let pairs: Vec<(&str, &Backend)> = ["v1", "v2"].into_iter().zip(b.iter()).collect();
    let config = |selector_app: &str| {
        service_yaml("reviews", 9080, &pairs)
            + &rule("namespace-wide", "v1", "")
            + &rule(
                "productpage-only",
                "v2",
                &format!("  workloadSelector:\n    matchLabels:\n      app: {selector_app}\n"),
            )
            + &reviews_routes("  - route:\n    - destination: {host: reviews, subset: chosen}\n")
    };
    let proxy = TestProxy::start(&config("productpage")).await;
    let c = proxy.client();
    assert_eq!(c.get("reviews:9080", "/", &[]).await.served_by(), "v2");
    // A selector that picks other pods leaves this one to the namespace's rule.
    let status = proxy.reconfigure(&config("ratings")).await;
    assert_eq!(status.last_error, None);
    assert_eq!(c.get("reviews:9080", "/", &[]).await.served_by(), "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_service_keeps_its_hostname_from_a_service_entry() {
    let b = reviews(&["v1", "v2"]).await;
    // Declared first, a ServiceEntry claims the Service's hostname for another endpoint.
    let squatter = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: squatter\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: \"{}\", ports: {{http: {}}}}}]\n---\n",
        b[1].addr.ip(),
        b[1].addr.port()
    );
    let yaml = squatter + &service_yaml("reviews", 9080, &[("v1", &b[0])]);
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    for _ in 0..5 {
        assert_eq!(c.get("reviews:9080", "/", &[]).await.served_by(), "v1");
    }
}

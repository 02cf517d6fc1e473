//! Conditions that depend on who the proxy stands beside (sourceLabels, sourceNamespace,
//! gateways), consistent hashing, body replay bounds and the inbound direction.

mod support;

use bytes::Bytes;
use std::sync::Arc;
use support::*;

async fn two_versions() -> (Backend, Backend, String) {
    let v1 = Backend::start("127.0.0.2", "v1", ok()).await;
    let v2 = Backend::start("127.0.0.3", "v2", ok()).await;
    let base = service_yaml("reviews", 9080, &[("v1", &v1), ("v2", &v2)])
        + &subsets_yaml("reviews", &["v1", "v2"], "");
    (v1, v2, base)
}

const BY_SOURCE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceLabels: {app: productpage, version: v2}
    route:
    - destination: {host: reviews, subset: v2}
  - match:
    - sourceNamespace: staging
    route:
    - destination: {host: reviews, subset: v2}
  - match:
    - gateways: [istio-system/ingress]
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: gateway-only
spec:
  hosts: [ratings]
  gateways: [istio-system/ingress]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_labels_namespace_and_gateways_follow_the_workload() {
    let (_v1, _v2, base) = two_versions().await;
    let yaml = base + BY_SOURCE;
    let productpage_v1 = TestProxy::start(&yaml).await;
    assert_eq!(
        productpage_v1
            .client()
            .get("reviews:9080", "/", &[])
            .await
            .served_by(),
        "v1"
    );
    let productpage_v2 = TestProxy::start_with(
        &yaml,
        Setup {
            labels: "app=productpage,version=v2",
            ..Setup::default()
        },
    )
    .await;
    assert_eq!(
        productpage_v2
            .client()
            .get("reviews:9080", "/", &[])
            .await
            .served_by(),
        "v2"
    );
    // Routes bound only to a gateway never apply to sidecars.
    let dump = weft_proxy::admin::config_dump(&productpage_v1.proxy.config);
    let vhosts = dump["routes"][0]["virtualHosts"].as_array().unwrap();
    let reviews = vhosts
        .iter()
        .find(|v| v["name"] == "reviews.default.svc.cluster.local:9080")
        .unwrap();
    assert_eq!(
        reviews["routes"].as_array().unwrap().len(),
        1,
        "only the catch-all applies to productpage v1: {reviews}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_user_on_one_endpoint() {
    let mut backends = Vec::new();
    for i in 0..4 {
        backends.push(
            Backend::start(&format!("127.0.0.{}", i + 2), ["a", "b", "c", "d"][i], ok()).await,
        );
    }
    let pairs: Vec<(&str, &Backend)> = ["a", "b", "c", "d"]
        .iter()
        .copied()
        .zip(backends.iter())
        .collect();
    let yaml = service_yaml("cart", 8080, &pairs)
        + &subsets_yaml("cart", &[], "  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n");
    let proxy = TestProxy::start(&yaml).await;
    let c = proxy.client();
    let mut owners = std::collections::BTreeSet::new();
    for user in 0..40 {
        let id = format!("user-{user}");
        let first = c
            .get("cart:8080", "/", &[("x-user", &id)])
            .await
            .served_by()
            .to_string();
        for _ in 0..5 {
            assert_eq!(
                c.served("cart:8080", "/", &[("x-user", &id)]).await,
                first,
                "{id} moved"
            );
        }
        owners.insert(first);
    }
    assert!(
        owners.len() >= 3,
        "40 users spread over the endpoints: {owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_hashing_with_a_ttl_generates_the_cookie_and_sticks_to_it() {
    let mut backends = Vec::new();
    for i in 0..4 {
        backends.push(
            Backend::start(&format!("127.0.0.{}", i + 2), ["a", "b", "c", "d"][i], ok()).await,
        );
    }
    let pairs: Vec<(&str, &Backend)> = ["a", "b", "c", "d"]
        .iter()
        .copied()
        .zip(backends.iter())
        .collect();
    let yaml = service_yaml("cart", 8080, &pairs)
        + &subsets_yaml("cart", &[], "  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie: {name: user, path: /cart, ttl: 3600s}\n");
    let proxy = TestProxy::start(&yaml).await;
    let set_cookie =
        regex::Regex::new(r#"^user="([0-9a-f]{16})"; Max-Age=3600; Path=/cart; HttpOnly$"#)
            .unwrap();
    let mut owners = std::collections::BTreeSet::new();
    for _ in 0..20 {
        // A new client is a new connection, and Envoy derives the cookie from it.
        let c = proxy.client();
        let first = c.get("cart:8080", "/cart", &[]).await;
        let header = first.headers["set-cookie"].to_str().unwrap();
        let value = set_cookie
            .captures(header)
            .unwrap_or_else(|| panic!("Envoy's Set-Cookie shape: {header}"))[1]
            .to_string();
        for cookie in [
            format!("user={value}"),
            format!("other=1; user=\"{value}\""),
        ] {
            let again = proxy
                .client()
                .get("cart:8080", "/cart", &[("cookie", &cookie)])
                .await;
            assert_eq!(again.served_by(), first.served_by(), "{cookie} moved");
            assert!(
                again.headers.get("set-cookie").is_none(),
                "the cookie is kept"
            );
        }
        owners.insert(first.served_by().to_string());
    }
    // 20 connections all hashing to one of 4 endpoints: probability 4^-19.
    assert!(owners.len() >= 2, "generated cookies spread: {owners:?}");

    // Without a ttl no cookie is generated.
    let yaml = service_yaml("cart", 8080, &pairs)
        + &subsets_yaml("cart", &[], "  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie: {name: user}\n");
    proxy.reconfigure(&yaml).await;
    let a = proxy.client().get("cart:8080", "/cart", &[]).await;
    assert_eq!(a.status, 200);
    assert!(a.headers.get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_too_large_to_replay_are_not_retried() {
    let retry_503 = virtual_service(
        "upload",
        "  - route:\n    - destination: {host: upload}\n    retries: {attempts: 2, retryOn: \"503\"}\n",
    );
    let flaky = Backend::start(
        "127.0.0.2",
        "v1",
        Arc::new(|n| (if n == 0 { 503 } else { 200 }, None)),
    )
    .await;
    let proxy =
        TestProxy::start(&(service_yaml("upload", 8000, &[("v1", &flaky)]) + &retry_503)).await;
    let c = proxy.client();
    let small = c
        .send(
            "POST",
            "upload:8000",
            "/",
            &[],
            Bytes::from(vec![1u8; 1024]),
        )
        .await;
    assert_eq!(
        (small.status.as_u16(), flaky.hits()),
        (200, 2),
        "a small body is replayed"
    );
    let flaky = Backend::start(
        "127.0.0.3",
        "v1",
        Arc::new(|n| (if n == 0 { 503 } else { 200 }, None)),
    )
    .await;
    let proxy =
        TestProxy::start(&(service_yaml("upload", 8000, &[("v1", &flaky)]) + &retry_503)).await;
    let big = proxy
        .client()
        .send(
            "POST",
            "upload:8000",
            "/",
            &[],
            Bytes::from(vec![1u8; 200 * 1024]),
        )
        .await;
    assert_eq!(
        (big.status.as_u16(), flaky.hits()),
        (503, 1),
        "a 200 KiB body was streamed, so it cannot be retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_traffic_reaches_the_local_workload() {
    let app = Backend::start("127.0.0.1", "app", ok()).await;
    let config = ConfigDir::new();
    config.write("mesh.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: app\nspec:\n  ports: [{name: http, port: 80}]\n");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut opts = weft_proxy::ProxyOptions::istio_defaults(Default::default());
    opts.bind_all(any);
    opts.inbound_target = Some(app.addr);
    opts.access_log = weft_proxy::telemetry::access_log::AccessLog::Off;
    opts.orig_dst = Arc::new(weft_proxy::transport::orig_dst::NoOriginalDst);
    let proxy = weft_proxy::Proxy::start(opts).await.unwrap();
    // A proxy serves once it has a config, even an empty one.
    proxy.config.apply(Vec::new()).await.unwrap();
    let client = HttpClient::new(proxy.inbound_addr);
    let a = client
        .get("app.default.svc.cluster.local", "/hello", &[])
        .await;
    assert_eq!((a.status.as_u16(), a.served_by()), (200, "app"));
    assert_eq!(a.headers["x-seen-path"], "/hello");
    assert_eq!(
        a.headers["x-seen-host"], "app.default.svc.cluster.local",
        "Host is kept on the way in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_to_scopes_config_by_namespace() {
    let (_v1, _v2, base) = two_versions().await;
    // A VirtualService in `other`, exported only there, must not steer `default`'s traffic;
    // one exported to `default` by name does.
    let private = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: private\n  namespace: other\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  exportTo: [\".\"]\n  http:\n  - route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v2}\n";
    let proxy = TestProxy::start(&(base.clone() + private)).await;
    for _ in 0..20 {
        assert_ne!(
            proxy
                .client()
                .get("reviews:9080", "/", &[])
                .await
                .served_by(),
            "",
            "still routed"
        );
    }
    let dump = weft_proxy::admin::config_dump(&proxy.proxy.config);
    assert!(
        dump["routes"][0]["virtualHosts"][0]["virtualService"].is_null(),
        "{}",
        dump["routes"]
    );
    let shared = private.replace("exportTo: [\".\"]", "exportTo: [default]");
    proxy.reconfigure(&(base + &shared)).await;
    for _ in 0..10 {
        assert_eq!(
            proxy
                .client()
                .get("reviews:9080", "/", &[])
                .await
                .served_by(),
            "v2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_resource_opens_egress_with_allow_any() {
    let outside = Backend::start("127.0.0.5", "outside", ok()).await;
    let host = outside.addr.to_string();
    let mut proxy = TestProxy::start("apiVersion: v1\nkind: Service\nmetadata:\n  name: unrelated\nspec:\n  ports: [{name: http, port: 80}]\n").await;
    assert_eq!(
        proxy.client().get(&host, "/", &[]).await.status,
        502,
        "REGISTRY_ONLY by default"
    );
    assert_eq!(
        proxy.log.recv().await.unwrap().upstream_cluster.as_deref(),
        Some("BlackHoleCluster")
    );
    proxy
        .reconfigure("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\nspec:\n  outboundTrafficPolicy:\n    mode: ALLOW_ANY\n")
        .await;
    let a = proxy.client().get(&host, "/", &[]).await;
    assert_eq!((a.status.as_u16(), a.served_by()), (200, "outside"));
    assert_eq!(
        proxy.log.recv().await.unwrap().upstream_cluster.as_deref(),
        Some("PassthroughCluster")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_defined_twice_is_its_later_definition() {
    let (_v1, _v2, base) = two_versions().await;
    let to = |v: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {v}}}\n---\n")
    };
    let proxy = TestProxy::start(&(base + &to("v1") + &to("v2"))).await;
    for _ in 0..10 {
        assert_eq!(proxy.client().served("reviews:9080", "/", &[]).await, "v2");
    }
}

/// An upstream that names itself in `server`, as most app servers do.
async fn app_with_server_header(ip: &str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    let reply = b"HTTP/1.1 200 OK\r\nserver: app\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_header_is_istios_per_direction_and_configurable() {
    let app = app_with_server_header("127.0.0.2").await;
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: app\nspec:\n  selector: {{app: app}}\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: app\nspec:\n  address: 127.0.0.2\n  labels: {{app: app}}\n  ports: {{http: {}}}\n",
        app.port()
    );
    let server = |a: &Answer| {
        a.headers
            .get("server")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let start = |server_header| {
        let yaml = yaml.clone();
        async move {
            TestProxy::start_with(
                &yaml,
                Setup {
                    server_header,
                    inbound_target: Some(app),
                    ..Setup::default()
                },
            )
            .await
        }
    };
    // Istio's defaults: `envoy` on the outbound sidecar, `istio-envoy` inbound, both
    // overwriting what the app said, on local replies too.
    let proxy = start(Default::default()).await;
    let outbound = proxy.client().get("app:80", "/", &[]).await;
    assert_eq!(server(&outbound).as_deref(), Some("envoy"));
    let blocked = proxy.client().get("elsewhere.example", "/", &[]).await;
    assert_eq!(
        (blocked.status.as_u16(), server(&blocked).as_deref()),
        (502, Some("envoy"))
    );
    let inbound = HttpClient::new(proxy.proxy.inbound_addr)
        .get("app.default.svc.cluster.local", "/", &[])
        .await;
    assert_eq!(server(&inbound).as_deref(), Some("istio-envoy"));

    // proxyHeaders.server.value: one value everywhere.
    let proxy = start(weft_proxy::ServerHeader {
        disabled: false,
        value: Some("weft".into()),
    })
    .await;
    assert_eq!(
        server(&proxy.client().get("app:80", "/", &[]).await).as_deref(),
        Some("weft")
    );
    let inbound = HttpClient::new(proxy.proxy.inbound_addr)
        .get("app", "/", &[])
        .await;
    assert_eq!(server(&inbound).as_deref(), Some("weft"));

    // proxyHeaders.server.disabled: the app's header passes through; none is added.
    let proxy = start(weft_proxy::ServerHeader {
        disabled: true,
        value: None,
    })
    .await;
    assert_eq!(
        server(&proxy.client().get("app:80", "/", &[]).await).as_deref(),
        Some("app")
    );
    let blocked = proxy.client().get("elsewhere.example", "/", &[]).await;
    assert_eq!(server(&blocked), None);

    // MeshConfig's defaultConfig.proxyHeaders.server overrides the proxy's own setting,
    // and a change to it applies without a restart.
    let mesh = |server: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: 'defaultConfig: {{proxyHeaders: {{server: {server}}}}}'\n---\n")
    };
    proxy
        .reconfigure(&(mesh("{value: mesh-wide}") + &yaml))
        .await;
    assert_eq!(
        server(&proxy.client().get("app:80", "/", &[]).await).as_deref(),
        Some("mesh-wide")
    );
    proxy
        .reconfigure(&(mesh("{disabled: false}") + &yaml))
        .await;
    assert_eq!(
        server(&proxy.client().get("app:80", "/", &[]).await).as_deref(),
        Some("envoy")
    );
}

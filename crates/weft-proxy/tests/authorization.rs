//! AuthorizationPolicy on real sidecars over real mTLS: Istio's evaluation order (CUSTOM
//! asking a real HTTP authorizer as in Istio's "External authorization" task,
//! DENY, ALLOW), its 403 `RBAC: access denied`, each kind of field (principals, namespaces,
//! service accounts, IP blocks, hosts, ports, methods, paths, `when` conditions) with its
//! `not` form, and TCP connections closed when denied.

mod support;

use std::sync::{Arc, Mutex};
use support::mesh::*;
use support::{wait_for, Backend, HttpClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn policy(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}\n---\n"
    )
}

/// productpage → reviews over mTLS, reviews' sidecar holding `policies`.
async fn under(policies: &str) -> (Backend, Sidecar, Sidecar, tempfile::TempDir) {
    let (dir, ca) = ca();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let (client, server) = pair_under(&ca, app.addr, policies).await;
    (app, client, server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_nothing_answers_istios_403() {
    let (app, mut client, mut server, _dir) =
        under(&policy("default", "allow-nothing", "  {}")).await;
    let answer = HttpClient::new(client.proxy.outbound_addr)
        .get("reviews:9080", "/reviews/0", &[])
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.text(), "RBAC: access denied");
    assert!(
        answer.hint().contains(
            "no ALLOW policy matches; this workload has AuthorizationPolicy default/allow-nothing"
        ),
        "{}",
        answer.hint()
    );
    let inbound = server.next_log().await;
    assert_eq!(inbound.status, 403);
    assert_eq!(inbound.details, "rbac_access_denied_matched_policy[none]");
    assert_eq!(client.next_log().await.status, 403);
    wait_for(
        server.proxy.stats_addr,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("response_code", "403"),
            ("source_principal", PRODUCTPAGE),
        ],
        1.0,
    )
    .await;
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_by_principal_method_and_path() {
    let (app, client, server, _dir) = under(&policy(
        "default",
        "reviews-viewer",
        "  selector:\n    matchLabels:\n      app: reviews\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/default/sa/bookinfo-productpage]\n    to:\n    - operation:\n        methods: [GET]\n        paths: [/reviews/*, /health]",
    ))
    .await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(
        http.get("reviews:9080", "/reviews/1", &[]).await.status,
        200
    );
    assert_eq!(http.get("reviews:9080", "/health", &[]).await.status, 200);
    assert_eq!(
        http.get("reviews:9080", "/ratings/1", &[]).await.status,
        403
    );
    let post = http
        .send(
            "POST",
            "reviews:9080",
            "/reviews/1",
            &[],
            bytes::Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(post.status, 403);
    // A caller outside the mesh has no principal.
    let direct = HttpClient::new(server.proxy.inbound_addr);
    assert_eq!(
        direct.get("reviews:9080", "/reviews/1", &[]).await.status,
        403
    );
    assert_eq!(app.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_comes_before_allow() {
    let policies = policy("default", "allow-all", "  rules:\n  - {}")
        + &policy(
            "default",
            "deny-evil",
            "  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-evil]\n      values: [\"1\", \"yes*\"]",
        );
    let (_app, client, mut server, _dir) = under(&policies).await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/", &[]).await.status, 200);
    let _ = server.next_log().await;
    let denied = http.get("reviews:9080", "/", &[("x-evil", "yessir")]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.hint(),
        "denied by AuthorizationPolicy default/deny-evil (rule 0)"
    );
    assert_eq!(
        server.next_log().await.details,
        "rbac_access_denied_matched_policy[ns[default]-policy[deny-evil]-rule[0]]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_accounts_ip_blocks_and_their_not_forms() {
    let status = |policies: String| async move {
        let (_app, client, _server, _dir) = under(&policies).await;
        HttpClient::new(client.proxy.outbound_addr)
            .get("reviews:9080", "/", &[])
            .await
            .status
    };
    let allow = |source: &str| {
        policy(
            "default",
            "p",
            &format!("  rules:\n  - from:\n    - source:\n        {source}"),
        )
    };
    assert_eq!(status(allow("namespaces: [default]")).await, 200);
    assert_eq!(status(allow("namespaces: [prod*]")).await, 403);
    assert_eq!(status(allow("notNamespaces: [default]")).await, 403);
    assert_eq!(
        status(allow("serviceAccounts: [bookinfo-productpage]")).await,
        200
    );
    assert_eq!(
        status(allow("serviceAccounts: [other/bookinfo-productpage]")).await,
        403
    );
    assert_eq!(
        status(allow("principals: [\"*/sa/bookinfo-productpage\"]")).await,
        200
    );
    assert_eq!(status(allow("trustDomains: [cluster.local]")).await, 200);
    assert_eq!(status(allow("ipBlocks: [127.0.0.0/8]")).await, 200);
    assert_eq!(status(allow("ipBlocks: [10.0.0.0/8]")).await, 403);
    assert_eq!(status(allow("notIpBlocks: [127.0.0.1]")).await, 403);
    // Hosts with or without the port; ports are the workload's (here the app's).
    let to = |operation: &str| {
        policy(
            "default",
            "p",
            &format!("  rules:\n  - to:\n    - operation:\n        {operation}"),
        )
    };
    assert_eq!(status(to("hosts: [reviews]")).await, 200);
    assert_eq!(status(to("hosts: [\"reviews:*\"]")).await, 200);
    assert_eq!(status(to("notHosts: [REVIEWS]")).await, 403);
    assert_eq!(status(to("ports: [\"1\"]")).await, 403);
    // Policies of another namespace, or selecting another workload, do not apply.
    assert_eq!(status(policy("prod", "allow-nothing", "  {}")).await, 200);
    assert_eq!(
        status(policy(
            "default",
            "ratings-only",
            "  selector:\n    matchLabels:\n      app: ratings"
        ))
        .await,
        200
    );
    // The root namespace's apply to every workload.
    assert_eq!(
        status(policy("istio-system", "allow-nothing", "  {}")).await,
        403
    );
}

/// Istio's ext-authz sample, as its HTTP server answers: `x-ext-authz: allow` gets 200 and
/// `x-ext-authz-check-result: allowed`, anything else 403 with the sample's words. Beyond
/// the sample, `login` gets a 302 to a login page and `broken` a 503. What it was asked is
/// kept.
async fn ext_authz_sample() -> (std::net::SocketAddr, Arc<Mutex<Vec<http::request::Parts>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.3:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let (parts, _) = req.into_parts();
                            let asked = parts.headers.get("x-ext-authz").cloned();
                            let allow = asked.as_ref().is_some_and(|v| v == "allow");
                            seen.lock().unwrap().push(parts);
                            let empty = || http_body_util::Full::new(bytes::Bytes::new());
                            let response = if asked.as_ref().is_some_and(|v| v == "login") {
                                http::Response::builder()
                                    .status(302)
                                    .header("location", "https://login.example.com/")
                                    .header("www-authenticate", "Bearer realm=\"example\"")
                                    .header("x-ext-authz-check-result", "denied")
                                    .header("x-internal", "not for the caller")
                                    .body(empty())
                            } else if asked.as_ref().is_some_and(|v| v == "broken") {
                                http::Response::builder().status(503).body(empty())
                            } else if allow {
                                http::Response::builder()
                                    .header("x-ext-authz-check-result", "allowed")
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                            } else {
                                http::Response::builder()
                                .status(403)
                                .header("x-ext-authz-check-result", "denied")
                                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                    b"denied by ext_authz for not found header `x-ext-authz: allow` in the request",
                                )))
                            };
                            Ok::<_, std::convert::Infallible>(response.unwrap())
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, asked)
}

/// The ext-authz service at `addr`, MeshConfig naming it as Istio's task does (with
/// `provider` settings added), and the task's CUSTOM policy on reviews' `/headers`.
fn ext_authz_config(addr: std::net::SocketAddr, provider: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: ext-authz, namespace: foo}}\nspec:\n  selector: {{app: ext-authz}}\n  ports:\n  - {{name: http, port: 8000}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: ext-authz, namespace: foo}}\nspec:\n  address: {ip}\n  labels: {{app: ext-authz}}\n  ports: {{http: {port}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: sample-ext-authz-http\n      envoyExtAuthzHttp:\n        service: ext-authz.foo.svc.cluster.local\n        port: \"8000\"\n        includeRequestHeadersInCheck: [x-ext-authz]\n{provider}    - name: sample-ext-authz-grpc\n      envoyExtAuthzGrpc: {{service: ext-authz.foo.svc.cluster.local, port: \"9000\"}}\n---\n",
        ip = addr.ip(),
        port = addr.port()
    ) + &policy(
        "default",
        "ext-authz",
        "  action: CUSTOM\n  provider:\n    name: sample-ext-authz-http\n  rules:\n  - to:\n    - operation:\n        paths: [/headers]",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_asks_the_external_authorizer_as_in_istios_task() {
    let (authorizer, asked) = ext_authz_sample().await;
    let (app, client, _server, _dir) = under(&ext_authz_config(authorizer, "")).await;
    let http = HttpClient::new(client.proxy.outbound_addr);

    // Istio's task: `x-ext-authz: deny` is denied with the authorizer's own answer.
    let denied = http
        .get(
            "reviews:9080",
            "/headers",
            &[("x-ext-authz", "deny"), ("cookie", "secret")],
        )
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.text(),
        "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
    );
    assert_eq!(denied.headers["x-ext-authz-check-result"], "denied");
    assert_eq!(app.hits(), 0);
    // The check carried the method, path, Host and the header named, nothing else.
    let check = asked
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the authorizer was asked");
    assert_eq!(
        (check.method.as_str(), check.uri.path()),
        ("GET", "/headers")
    );
    assert_eq!(check.headers["x-ext-authz"], "deny");
    assert!(
        check.headers["host"]
            .to_str()
            .unwrap()
            .starts_with("reviews"),
        "{check:?}"
    );
    assert!(!check.headers.contains_key("cookie"), "{check:?}");

    let allowed = http
        .get("reviews:9080", "/headers", &[("x-ext-authz", "allow")])
        .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(app.hits(), 1);
    // Paths no CUSTOM rule matches are not asked about.
    let before = asked.lock().unwrap().len();
    assert_eq!(
        http.get("reviews:9080", "/ip", &[("x-ext-authz", "deny")])
            .await
            .status,
        200
    );
    assert_eq!(asked.lock().unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizers_headers_and_failures_pass_as_envoy_passes_them() {
    let (authorizer, asked) = ext_authz_sample().await;
    let config = ext_authz_config(authorizer, "        headersToDownstreamOnAllow: [x-ext-authz-check-result]\n        headersToDownstreamOnDeny: [x-ext-authz-check*]\n")
        .replace("includeRequestHeadersInCheck: [x-ext-authz]", "includeRequestHeadersInCheck: [x-ext-authz, x-extra-*]");
    let (app, client, mut server, _dir) = under(&config).await;
    let http = HttpClient::new(client.proxy.outbound_addr);

    // Authorization is always sent; `x-extra-*` is a prefix.
    let allowed = http
        .get(
            "reviews:9080",
            "/headers",
            &[
                ("x-ext-authz", "allow"),
                ("authorization", "Bearer t"),
                ("x-extra-one", "1"),
                ("cookie", "secret"),
            ],
        )
        .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.headers["x-ext-authz-check-result"], "allowed");
    let check = asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(check.headers["authorization"], "Bearer t");
    assert_eq!(check.headers["x-extra-one"], "1");
    assert!(!check.headers.contains_key("cookie"), "{check:?}");
    assert_eq!(app.hits(), 1);

    // A redirect to log in keeps Location and WWW-Authenticate beside the listed headers.
    let login = http
        .get("reviews:9080", "/headers", &[("x-ext-authz", "login")])
        .await;
    assert_eq!(login.status, 302);
    assert_eq!(login.headers["location"], "https://login.example.com/");
    assert_eq!(
        login.headers["www-authenticate"],
        "Bearer realm=\"example\""
    );
    assert_eq!(login.headers["x-ext-authz-check-result"], "denied");
    assert!(
        !login.headers.contains_key("x-internal"),
        "{:?}",
        login.headers
    );
    assert_eq!(server.next_log().await.status, 200);
    let log = server.next_log().await;
    assert_eq!((log.status, &*log.details), (302, "ext_authz_denied"));

    // The authorizer's own 5xx is a failure, not a decision: statusOnError.
    let broken = http
        .get("reviews:9080", "/headers", &[("x-ext-authz", "broken")])
        .await;
    assert_eq!(broken.status, 403);
    assert!(broken.hint().contains("answered 503"), "{}", broken.hint());
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorizer_that_cannot_answer_denies_unless_fail_open() {
    // Nothing listens there.
    let gone: std::net::SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_app, client, mut server, _dir) = under(&ext_authz_config(gone, "")).await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    let denied = http.get("reviews:9080", "/headers", &[]).await;
    assert_eq!(denied.status, 403);
    assert!(
        denied.hint().contains("sample-ext-authz-http\" failed"),
        "{}",
        denied.hint()
    );
    let log = server.next_log().await;
    assert_eq!(
        (&*log.details, log.flags.to_string()),
        ("ext_authz_error", "UAEX".to_string())
    );

    let (_app, client, _server, _dir) = under(&ext_authz_config(
        gone,
        "        failOpen: true\n        statusOnError: \"503\"\n",
    ))
    .await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/headers", &[]).await.status, 200);

    // A gRPC provider is not called: denied, saying why.
    let grpc = ext_authz_config(gone, "").replace(
        "name: sample-ext-authz-http\n  rules",
        "name: sample-ext-authz-grpc\n  rules",
    );
    let (_app, client, _server, _dir) = under(&grpc).await;
    let denied = HttpClient::new(client.proxy.outbound_addr)
        .get("reviews:9080", "/headers", &[])
        .await;
    assert_eq!(denied.status, 403);
    assert!(
        denied.hint().contains("envoyExtAuthzGrpc"),
        "{}",
        denied.hint()
    );
}

/// Sends a line through the client sidecar's CONNECT tunnel to reviews (TCP); whether it
/// came back.
async fn echoes(client: &Sidecar) -> bool {
    let mut s = tunnel_to_reviews(client).await;
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut back = [0u8; 4];
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && &back == b"ping"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_closed_when_denied() {
    let app = support::tcp_echo("127.0.0.1").await;
    let run = |policies: String| async move {
        let (_dir, ca) = ca();
        let root = ca.root_pem().to_string();
        let (client, _server) = pair(
            Some(certificates(&ca, "bookinfo-productpage", day(), &root)),
            Some(certificates(&ca, "bookinfo-reviews", day(), &root)),
            app,
            |inbound| reviews_yaml(inbound, true, "bookinfo-reviews", "tcp"),
            &policies,
        )
        .await;
        echoes(&client).await
    };
    let port = app.port();
    assert!(
        run(policy(
            "default",
            "p",
            &format!("  rules:\n  - to:\n    - operation:\n        ports: [\"{port}\"]")
        ))
        .await
    );
    assert!(!run(policy("default", "allow-nothing", "  {}")).await);
    // An ALLOW rule with an HTTP-only field never matches a connection...
    assert!(
        !run(policy(
            "default",
            "p",
            "  rules:\n  - to:\n    - operation:\n        methods: [GET]"
        ))
        .await
    );
    // ...and a DENY rule matches on its other fields, denying more.
    assert!(
        !run(policy(
            "default",
            "p",
            &format!("  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n        ports: [\"{port}\"]")
        ))
        .await
    );
    assert!(run(policy("default", "p", "  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/default/sa/bookinfo-productpage]")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_marks_what_it_matches_in_the_access_log_and_decides_nothing() {
    let policies = policy(
        "default",
        "audit-reviews",
        "  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        paths: [/audited*]",
    ) + &policy(
        "default",
        "deny-evil",
        "  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-evil]\n      values: [\"1\"]",
    );
    let (app, client, mut server, _dir) = under(&policies).await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    // Envoy's RBAC filter in LOG mode: `access_log_hint` says whether an AUDIT policy
    // matched; the request goes on either way.
    assert_eq!(http.get("reviews:9080", "/audited", &[]).await.status, 200);
    assert_eq!(server.next_log().await.access_log_hint, Some(true));
    assert_eq!(http.get("reviews:9080", "/plain", &[]).await.status, 200);
    assert_eq!(server.next_log().await.access_log_hint, Some(false));
    // AUDIT comes before DENY, as Istio orders its filters: a denied request is marked too.
    let denied = http
        .get("reviews:9080", "/audited/evil", &[("x-evil", "1")])
        .await;
    assert_eq!(denied.status, 403);
    let entry = server.next_log().await;
    assert_eq!((entry.status, entry.access_log_hint), (403, Some(true)));
    assert_eq!(app.hits(), 2);

    // Where no AUDIT policy applies, the hint is unset: `-` in text.
    let (_app, client, mut server, _dir) =
        under(&policy("default", "allow-all", "  rules:\n  - {}")).await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/audited", &[]).await.status, 200);
    assert_eq!(server.next_log().await.access_log_hint, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_marks_tcp_connections_it_matches() {
    let app = support::tcp_echo("127.0.0.1").await;
    let port = app.port();
    let (_dir, ca) = ca();
    let root = ca.root_pem().to_string();
    let (client, mut server) = pair(
        Some(certificates(&ca, "bookinfo-productpage", day(), &root)),
        Some(certificates(&ca, "bookinfo-reviews", day(), &root)),
        app,
        |inbound| reviews_yaml(inbound, true, "bookinfo-reviews", "tcp"),
        &policy(
            "default",
            "audit-port",
            &format!(
                "  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        ports: [\"{port}\"]"
            ),
        ),
    )
    .await;
    assert!(echoes(&client).await);
    let entry = server.next_log().await;
    assert_eq!(entry.access_log_hint, Some(true), "{entry:?}");
}

//! AuthorizationPolicy on real sidecars over real mTLS: Istio's evaluation order (CUSTOM,
//! DENY, ALLOW), its 403 `RBAC: access denied`, each kind of field (principals, namespaces,
//! service accounts, IP blocks, hosts, ports, methods, paths, `when` conditions) with its
//! `not` form, and TCP connections closed when denied.

mod support;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_fails_closed_until_an_external_authorizer_can_be_called() {
    let (_app, client, _server, _dir) = under(&policy(
        "default",
        "ext",
        "  action: CUSTOM\n  provider:\n    name: my-ext-authz\n  rules:\n  - to:\n    - operation:\n        paths: [/admin/*]",
    ))
    .await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/", &[]).await.status, 200);
    let denied = http.get("reviews:9080", "/admin/x", &[]).await;
    assert_eq!(denied.status, 403);
    assert!(denied.hint().contains("my-ext-authz"), "{}", denied.hint());
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

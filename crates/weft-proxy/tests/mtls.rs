//! Istio's auto mTLS between real sidecars: a client sidecar takes mTLS to endpoints
//! labelled as having a sidecar and plaintext to the rest; the server sidecar terminates it
//! beside plaintext on the same port (PERMISSIVE), names both principals in its metrics and
//! refuses certificates that are foreign, expired or not the destination's identity.
//! PeerAuthentication's modes (STRICT, DISABLE, per port) act on both sides.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use support::mesh::*;
use support::{wait_for, Backend, HttpClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Everything the proxies log at WARN and above, for the tests that read a refusal's line.
fn logged() -> Arc<Mutex<Vec<u8>>> {
    static LOGGED: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGGED
        .get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let writer = buffer.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(move || Capture(writer.clone()))
                .init();
            buffer
        })
        .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn until_logged(needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&logged().lock().unwrap()).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {needle:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_speak_mtls_and_report_both_principals() {
    let (_dir, ca) = ca();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let (mut client, mut server) =
        signed_pair(&ca, "bookinfo-reviews", app.addr, true, "http").await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    let answer = http.get("reviews:9080", "/reviews/0", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.served_by(), "reviews-v1");

    let inbound = server.next_log().await;
    assert!(inbound.downstream_mtls);
    assert_eq!(
        inbound.downstream_peer_principal.as_deref(),
        Some(PRODUCTPAGE)
    );
    // Istio's SNI for the destination, as Envoy's REQUESTED_SERVER_NAME shows it.
    assert_eq!(
        inbound.requested_server_name.as_deref(),
        Some("outbound_.9080_._.reviews.default.svc.cluster.local")
    );
    let outbound = client.next_log().await;
    assert_eq!(outbound.upstream_peer_principal.as_deref(), Some(REVIEWS));

    wait_for(
        server.proxy.stats_addr,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", PRODUCTPAGE),
            ("destination_principal", REVIEWS),
            ("source_workload", "productpage-v1"),
        ],
        1.0,
    )
    .await;
    wait_for(
        client.proxy.stats_addr,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("connection_security_policy", "unknown"),
            ("source_principal", PRODUCTPAGE),
            ("destination_principal", REVIEWS),
        ],
        1.0,
    )
    .await;

    // PERMISSIVE: a plaintext caller outside the mesh reaches the same port.
    let direct = HttpClient::new(server.proxy.inbound_addr);
    assert_eq!(direct.get("reviews:9080", "/", &[]).await.status, 200);
    let plain = server.next_log().await;
    assert!(!plain.downstream_mtls);
    assert_eq!(plain.requested_server_name, None);
    wait_for(
        server.proxy.stats_addr,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "none"),
            ("source_principal", "unknown"),
            ("destination_principal", "unknown"),
        ],
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_a_sidecar_gets_plaintext() {
    let (_dir, ca) = ca();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let (mut client, mut server) =
        signed_pair(&ca, "bookinfo-reviews", app.addr, false, "http").await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/", &[]).await.status, 200);
    assert!(!server.next_log().await.downstream_mtls);
    assert_eq!(client.next_log().await.upstream_peer_principal, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_between_sidecars_is_mtls_too() {
    let (_dir, ca) = ca();
    let app = support::tcp_echo("127.0.0.1").await;
    let (client, mut server) = signed_pair(&ca, "bookinfo-reviews", app, true, "tcp").await;
    // CONNECT through the client sidecar, as an explicit-proxy TCP client.
    let mut s = tunnel_to_reviews(&client).await;
    s.write_all(b"ping over mtls").await.unwrap();
    let mut back = [0u8; 14];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping over mtls");
    drop(s);
    let entry = server.next_log().await;
    assert!(entry.downstream_mtls);
    assert_eq!(
        entry.downstream_peer_principal.as_deref(),
        Some(PRODUCTPAGE)
    );
    wait_for(
        server.proxy.stats_addr,
        "istio_tcp_connections_closed_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", PRODUCTPAGE),
        ],
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_the_destinations_identity_is_refused() {
    let (_dir, ca) = ca();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    // The registry says reviews runs as bookinfo-reviews; this server is bookinfo-ratings.
    let (client, _server) = signed_pair(&ca, "bookinfo-ratings", app.addr, true, "http").await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    let answer = http.get("reviews:9080", "/", &[]).await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.hint().contains(
            "spiffe://cluster.local/ns/default/sa/bookinfo-ratings, which this destination does not accept"
        ),
        "{}",
        answer.hint()
    );
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_root_are_refused_both_ways() {
    logged();
    let (_dir, ca) = ca();
    let (_other_dir, other) = self::ca();
    let root = ca.root_pem().to_string();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    // A client whose certificate another CA signed: the server refuses the handshake.
    let (client, _server) = pair(
        Some(certificates(&other, "bookinfo-productpage", day(), &root)),
        Some(certificates(&ca, "bookinfo-reviews", day(), &root)),
        app.addr,
        |inbound| reviews_yaml(inbound, true, "bookinfo-reviews", "http"),
        "",
    )
    .await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    let answer = http.get("reviews:9080", "/", &[]).await;
    assert_eq!(answer.status, 503);
    // Both roots are Istio-named alike, so the chain fails on its signature.
    let text =
        until_logged("inbound mTLS handshake failed: invalid peer certificate: BadSignature").await;
    assert!(text.contains("WARN"), "{text}");

    // A server whose certificate another CA signed: the client refuses it.
    let (client, _server) = pair(
        Some(certificates(&ca, "bookinfo-productpage", day(), &root)),
        Some(certificates(&other, "bookinfo-reviews", day(), &root)),
        app.addr,
        |inbound| reviews_yaml(inbound, true, "bookinfo-reviews", "http"),
        "",
    )
    .await;
    let answer = HttpClient::new(client.proxy.outbound_addr)
        .get("reviews:9080", "/", &[])
        .await;
    assert_eq!(answer.status, 503);
    assert!(
        answer
            .hint()
            .contains("invalid peer certificate: BadSignature"),
        "{}",
        answer.hint()
    );
    assert_eq!(app.hits(), 0);
}

/// productpage → reviews over mTLS, one side's certificate (the client's if
/// `client_expires`, else the server's) lasting a second; returned once that has expired,
/// with its notAfter and the answer to a request made then.
async fn once_one_expired(
    client_expires: bool,
) -> (
    Backend,
    Sidecar,
    Sidecar,
    i64,
    support::Answer,
    tempfile::TempDir,
) {
    logged();
    let (dir, ca) = ca();
    let root = ca.root_pem().to_string();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let (client_life, server_life) = if client_expires {
        (Duration::from_secs(1), day())
    } else {
        (day(), Duration::from_secs(1))
    };
    let client_certs = certificates(&ca, "bookinfo-productpage", client_life, &root);
    let server_certs = certificates(&ca, "bookinfo-reviews", server_life, &root);
    let expiring = if client_expires {
        &client_certs
    } else {
        &server_certs
    };
    let not_after = expiring.current().unwrap().leaf.not_after;
    let (client, server) = pair(
        Some(client_certs),
        Some(server_certs),
        app.addr,
        |inbound| reviews_yaml(inbound, true, "bookinfo-reviews", "http"),
        "",
    )
    .await;
    // notAfter has one-second resolution.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        <= not_after
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = HttpClient::new(client.proxy.outbound_addr)
        .get("reviews:9080", "/", &[])
        .await;
    assert_eq!(answer.status, 503);
    assert_eq!(app.hits(), 0);
    (app, client, server, not_after, answer, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let (_app, mut client, _server, _, answer, _dir) = once_one_expired(false).await;
    assert!(answer.hint().contains("Expired"), "{}", answer.hint());
    // The server learns why from the client's alert.
    until_logged("inbound mTLS handshake failed: received fatal alert: CertificateExpired").await;
    let entry = client.next_log().await;
    assert!(
        entry
            .upstream_transport_failure_reason
            .as_deref()
            .is_some_and(|r| r.contains("Expired")),
        "{entry:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_presenting_an_expired_certificate_is_refused() {
    let (_app, _client, _server, not_after, _, _dir) = once_one_expired(true).await;
    // The server's log says why, and since when, at WARN.
    let needle = "inbound mTLS handshake failed: invalid peer certificate: certificate expired";
    let text = until_logged(needle).await;
    let line = text.lines().find(|l| l.contains(needle)).unwrap();
    assert!(
        line.contains("WARN") && line.contains(&format!("not valid after {not_after}")),
        "{line}"
    );
}

/// What the proxy's 503 says about why, for a human.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_and_serves_sidecars() {
    let (_dir, ca) = ca();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let strict = peer_authentication("default", "default", "  mtls:\n    mode: STRICT");
    let (mut client, mut server) = pair_under(&ca, app.addr, &strict).await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/", &[]).await.status, 200);
    assert!(server.next_log().await.downstream_mtls);
    assert_eq!(
        client.next_log().await.upstream_peer_principal.as_deref(),
        Some(REVIEWS)
    );
    // Reset, as Istio's STRICT sidecar resets it (curl: exit 56).
    assert_eq!(
        plaintext_request(server.proxy.inbound_addr).await,
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_with_mtls_disabled_gets_plaintext_from_callers() {
    let (_dir, ca) = ca();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    // Mesh-wide STRICT, but reviews' own policy disables mTLS: its callers' auto mTLS
    // reads that and sends plaintext, which reviews' sidecar takes.
    let policies = peer_authentication("istio-system", "default", "  mtls:\n    mode: STRICT")
        + &peer_authentication(
            "default",
            "reviews",
            "  selector:\n    matchLabels:\n      app: reviews\n  mtls:\n    mode: DISABLE",
        );
    let (mut client, mut server) = pair_under(&ca, app.addr, &policies).await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/", &[]).await.status, 200);
    assert!(!server.next_log().await.downstream_mtls);
    assert_eq!(client.next_log().await.upstream_peer_principal, None);
    wait_for(
        server.proxy.stats_addr,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "none"),
        ],
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_level_mtls_overrides_the_workload_mode() {
    let (_dir, ca) = ca();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    // The sidecar's inbound target is the app's port: the port PeerAuthentication names.
    let port = app.addr.port();
    let permissive_port = peer_authentication(
        "default",
        "reviews",
        &format!("  selector:\n    matchLabels:\n      app: reviews\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    \"{port}\":\n      mode: PERMISSIVE"),
    );
    let (_client, server) = pair_under(&ca, app.addr, &permissive_port).await;
    assert_eq!(
        plaintext_request(server.proxy.inbound_addr)
            .await
            .as_deref(),
        Ok("HTTP/1.1 200 OK")
    );

    let strict_port = peer_authentication(
        "default",
        "reviews",
        &format!("  selector:\n    matchLabels:\n      app: reviews\n  mtls:\n    mode: PERMISSIVE\n  portLevelMtls:\n    \"{port}\":\n      mode: STRICT"),
    );
    let (_client, server) = pair_under(&ca, app.addr, &strict_port).await;
    assert_eq!(
        plaintext_request(server.proxy.inbound_addr).await,
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

fn destination_rule(tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  trafficPolicy:\n    tls:\n{tls}\n---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_rule_decides_over_auto_mtls() {
    let (_dir, ca) = ca();
    let root = ca.root_pem();
    let app = Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let start = |sidecar: bool, tls: &str| {
        let rule = destination_rule(tls);
        let (ca, app) = (&ca, app.addr);
        async move {
            pair(
                Some(certificates(ca, "bookinfo-productpage", day(), root)),
                Some(certificates(ca, "bookinfo-reviews", day(), root)),
                app,
                move |inbound| reviews_yaml(inbound, sidecar, "bookinfo-reviews", "http"),
                &rule,
            )
            .await
        }
    };
    // ISTIO_MUTUAL: mTLS even to an endpoint not labelled as having a sidecar.
    let (mut client, mut server) = start(false, "      mode: ISTIO_MUTUAL").await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/", &[]).await.status, 200);
    assert!(server.next_log().await.downstream_mtls);
    assert_eq!(
        client.next_log().await.upstream_peer_principal.as_deref(),
        Some(REVIEWS)
    );

    // subjectAltNames replace the service's accounts: a name the server lacks is refused.
    let (client, _server) = start(
        false,
        "      mode: ISTIO_MUTUAL\n      subjectAltNames: [spiffe://cluster.local/ns/default/sa/bookinfo-ratings]",
    )
    .await;
    let answer = HttpClient::new(client.proxy.outbound_addr)
        .get("reviews:9080", "/", &[])
        .await;
    assert_eq!(answer.status, 503);
    assert!(
        answer
            .hint()
            .contains("bookinfo-reviews, which this destination does not accept"),
        "{}",
        answer.hint()
    );

    // DISABLE: plaintext even to an endpoint with a sidecar.
    let (mut client, mut server) = start(true, "      mode: DISABLE").await;
    let http = HttpClient::new(client.proxy.outbound_addr);
    assert_eq!(http.get("reviews:9080", "/", &[]).await.status, 200);
    assert!(!server.next_log().await.downstream_mtls);
    assert_eq!(client.next_log().await.upstream_peer_principal, None);
}

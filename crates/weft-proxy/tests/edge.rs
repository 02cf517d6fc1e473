//! HTTP at the edge as Envoy behaves: what a client sees when its request head is unusual
//! (two Hosts, an absolute-form target, oversized headers, a malformed method, a path with
//! dot segments), and protocol sniffing that waits for a client that has not spoken yet.
//! Raw TCP writes where a normal client cannot send the input.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::transport::orig_dst::FixedOriginalDst;

/// A response read off a raw connection.
struct Raw {
    status: u16,
    head: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `request` and reads the response until the proxy closes the connection (the
/// requests say `Connection: close`, and the proxy closes after refusing a head).
async fn raw(proxy: SocketAddr, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request).await.unwrap();
    read_response(&mut s).await
}

async fn read_response(s: &mut TcpStream) -> Raw {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers and closes in time")
        .expect("no reset before the answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    Raw { status, head }
}

async fn two_services() -> (Backend, Backend, TestProxy) {
    let reviews = Backend::start("127.0.0.2", "reviews", ok()).await;
    let ratings = Backend::start("127.0.0.3", "ratings", ok()).await;
    let yaml = service_yaml("reviews", 9080, &[("v1", &reviews)])
        + &service_yaml("ratings", 9080, &[("v1", &ratings)]);
    let proxy = TestProxy::start(&yaml).await;
    (reviews, ratings, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_refused_with_400() {
    let (reviews, ratings, proxy) = two_services().await;
    let a = raw(
        proxy.proxy.outbound_addr,
        b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nHost: ratings:9080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a
        .header("x-weft-error")
        .unwrap()
        .contains("more than one Host"));
    assert_eq!((reviews.hits(), ratings.hits()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_routes_by_its_authority() {
    let (reviews, ratings, proxy) = two_services().await;
    let a = raw(
        proxy.proxy.outbound_addr,
        b"GET http://reviews:9080/x?y=1 HTTP/1.1\r\nHost: ratings:9080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-served-by"), Some("reviews"));
    assert_eq!(a.header("x-seen-host"), Some("reviews:9080"));
    assert_eq!(a.header("x-seen-path"), Some("/x?y=1"));
    assert_eq!((reviews.hits(), ratings.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_over_60_kib_get_431() {
    let (reviews, _ratings, proxy) = two_services().await;
    let head = |kib: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: reviews:9080\r\nx-big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(kib * 1024)
        )
    };
    let under = raw(proxy.proxy.outbound_addr, head(59).as_bytes()).await;
    assert_eq!(under.status, 200);
    let over = raw(proxy.proxy.outbound_addr, head(61).as_bytes()).await;
    assert_eq!(over.status, 431);
    assert!(over.header("x-weft-error").unwrap().contains("60 KiB"));
    assert_eq!(reviews.hits(), 1);
}

/// On HTTP/2 the limit is the same 60 KiB (hyper's own default is 16 KiB): over it, h2
/// answers 431 and resets the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_request_headers_follow_the_same_limit() {
    let (reviews, _ratings, proxy) = two_services().await;
    let stream = TcpStream::connect(proxy.proxy.outbound_addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut status = Vec::new();
    for kib in [20, 61] {
        let req = http::Request::get("http://reviews:9080/")
            .header("x-big", "a".repeat(kib * 1024))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        status.push(resp.status().as_u16());
        let _ = resp.into_body().collect().await;
    }
    assert_eq!(status, [200, 431]);
    assert_eq!(reviews.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_method_token_gets_400_not_a_reset() {
    let (reviews, _ratings, proxy) = two_services().await;
    let a = raw(
        proxy.proxy.outbound_addr,
        b"G@T / HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(reviews.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing_and_forwarding() {
    let public = Backend::start("127.0.0.2", "public", ok()).await;
    let private = Backend::start("127.0.0.3", "private", ok()).await;
    let yaml = service_yaml("reviews", 9080, &[("v1", &public), ("v2", &private)])
        + &subsets_yaml("reviews", &["v1", "v2"], "")
        + &reviews_routes(
            "  - match: [{uri: {prefix: /public/}}]\n    route: [{destination: {host: reviews, subset: v1}}]\n  - route: [{destination: {host: reviews, subset: v2}}]\n",
        );
    let proxy = TestProxy::start(&yaml).await;
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n")
    };
    let a = raw(
        proxy.proxy.outbound_addr,
        get("/a/../../etc/passwd").as_bytes(),
    )
    .await;
    assert_eq!(a.header("x-seen-path"), Some("/etc/passwd"));
    // Routing sees the normalised path: this is not under /public/.
    let a = raw(
        proxy.proxy.outbound_addr,
        get("/public/../admin?q=/../x").as_bytes(),
    )
    .await;
    assert_eq!(a.header("x-served-by"), Some("private"));
    assert_eq!(a.header("x-seen-path"), Some("/admin?q=/../x"));
    // Unreserved escapes are decoded, `%2F` stays, slashes are not merged (BASE).
    let a = raw(
        proxy.proxy.outbound_addr,
        get("/%70ublic/a%2Fb//c").as_bytes(),
    )
    .await;
    assert_eq!(a.header("x-served-by"), Some("public"));
    assert_eq!(a.header("x-seen-path"), Some("/public/a%2Fb//c"));
    let a = raw(proxy.proxy.outbound_addr, get("/a%00b").as_bytes()).await;
    assert_eq!(a.status, 400);
    assert_eq!(public.hits() + private.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sniffing_waits_for_a_client_that_speaks_late() {
    let (reviews, _ratings, proxy) = two_services().await;
    let mut s = TcpStream::connect(proxy.proxy.outbound_addr).await.unwrap();
    // A load generator opening its connections ahead of use.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let a = read_response(&mut s).await;
    assert_eq!(a.status, 200);
    assert_eq!(reviews.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_first_port_is_tcp_without_the_client_speaking() {
    let mysql: SocketAddr = "127.0.0.4:3306".parse().unwrap();
    let listener = TcpListener::bind(mysql).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"5.7.0-banner\n").await;
        }
    });
    let unrelated = Backend::start("127.0.0.2", "reviews", ok()).await;
    let proxy = TestProxy::start_with(
        &service_yaml("reviews", 9080, &[("v1", &unrelated)]),
        Setup {
            allow_any: true,
            orig_dst: Arc::new(FixedOriginalDst(mysql)),
            ..Default::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(proxy.proxy.outbound_addr).await.unwrap();
    let mut banner = [0u8; 13];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut banner))
        .await
        .expect("the banner arrives")
        .unwrap();
    assert_eq!(&banner, b"5.7.0-banner\n");
}

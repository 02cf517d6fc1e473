//! HTTP/2, gRPC, upgrades, large and chunked bodies, opaque TCP and TLS by SNI.

mod support;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::transport::orig_dst::FixedOriginalDst;

/// A gRPC-shaped HTTP/2 server: answers with a body and `grpc-status` trailers.
async fn grpc_server(ip: &str, status: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    assert_eq!(req.version(), http::Version::HTTP_2);
                    let authority = req
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    let has_host = req.headers().contains_key("host");
                    let _ = req.into_body().collect().await;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", status.parse().unwrap());
                    if status != "0" {
                        // Errors come trailers-only: grpc-status in the headers, no body.
                        return Ok(Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", status)
                            .body(GrpcBody {
                                data: None,
                                trailers: None,
                            })
                            .unwrap());
                    }
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .header("content-type", "application/grpc")
                            .header("x-seen-authority", authority)
                            .header("x-seen-host-header", has_host.to_string())
                            .body(GrpcBody {
                                data: Some(Bytes::from_static(b"\0\0\0\0\x02hi")),
                                trailers: Some(trailers),
                            })
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A unary gRPC answer: one message, then trailers.
struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match self.data.take() {
            Some(d) => Some(Frame::data(d)),
            None => self.trailers.take().map(Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

fn grpc_service(name: &str, port: u16, backend: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - {{name: grpc, port: {port}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}-1\nspec:\n  address: {}\n  labels: {{app: {name}}}\n  ports: {{grpc: {}}}\n---\n",
        backend.ip(),
        backend.port()
    )
}

async fn h2_call(
    proxy: SocketAddr,
    authority: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Option<http::HeaderMap>, Bytes) {
    h2_call_with(
        proxy,
        authority,
        headers,
        Bytes::from_static(b"\0\0\0\0\x01x"),
    )
    .await
}

/// A call whose request body is `messages` (length-prefixed gRPC messages).
async fn h2_call_with(
    proxy: SocketAddr,
    authority: &str,
    headers: &[(&str, &str)],
    messages: Bytes,
) -> (u16, http::HeaderMap, Option<http::HeaderMap>, Bytes) {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("http://{authority}/helloworld.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(messages)).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (
        parts.status.as_u16(),
        parts.headers,
        trailers,
        collected.to_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http2_keeps_trailers_and_faults_answer_grpc_status() {
    let backend = grpc_server("127.0.0.2", "0").await;
    let yaml = grpc_service("greeter", 50051, backend)
        + "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: greeter
spec:
  hosts: [greeter]
  http:
  - match:
    - headers:
        x-fail: {exact: \"yes\"}
    fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage: {value: 100}
    route:
    - destination: {host: greeter}
  - route:
    - destination: {host: greeter}
";
    let proxy = TestProxy::start(&yaml).await;
    let (status, _, trailers, body) =
        h2_call(proxy.proxy.outbound_addr, "greeter:50051", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"\0\0\0\0\x02hi");
    assert_eq!(
        trailers.expect("trailers cross the proxy")["grpc-status"],
        "0"
    );

    let (status, headers, _, _) = h2_call(
        proxy.proxy.outbound_addr,
        "greeter:50051",
        &[("x-fail", "yes")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "14");

    // `grpc_response_status` as the call ended: from the trailers after the message, or
    // from the headers of a trailers-only answer.
    for (status, calls) in [("0", 1.0), ("14", 1.0)] {
        let labels = [
            ("reporter", "source"),
            ("request_protocol", "grpc"),
            ("response_code", "200"),
            ("grpc_response_status", status),
        ];
        wait_for(
            proxy.proxy.stats_addr,
            "istio_requests_total",
            &labels,
            calls,
        )
        .await;
    }
}

/// `istio_request_messages_total` and `istio_response_messages_total` count the messages
/// each way, however the stream splits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_are_counted_each_way() {
    let backend = grpc_server("127.0.0.5", "0").await;
    let proxy = TestProxy::start(&grpc_service("greeter", 50051, backend)).await;
    let three = Bytes::from_static(b"\0\0\0\0\x01a\0\0\0\0\x02bc\0\0\0\0\0");
    let (status, _, _, _) =
        h2_call_with(proxy.proxy.outbound_addr, "greeter:50051", &[], three).await;
    assert_eq!(status, 200);
    let labels = [("reporter", "source"), ("request_protocol", "grpc")];
    let text = wait_for(
        proxy.proxy.stats_addr,
        "istio_request_messages_total",
        &labels,
        3.0,
    )
    .await;
    assert_eq!(
        sample(&text, "istio_response_messages_total", &labels),
        Some(1.0)
    );
    assert!(text.contains("# TYPE istio_request_messages_total counter\n"));
    // Plain HTTP has no messages.
    assert!(!text
        .lines()
        .any(|l| l.starts_with("istio_request_messages_total{") && l.contains("\"http\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_is_retried_by_default() {
    let down = grpc_server("127.0.0.3", "14").await;
    let up = grpc_server("127.0.0.4", "0").await;
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: greeter-2\nspec:\n  address: 127.0.0.4\n  labels: {{app: greeter}}\n  ports: {{grpc: {}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: greeter\nspec:\n  host: greeter\n  trafficPolicy:\n    loadBalancer: {{simple: ROUND_ROBIN}}\n",
        grpc_service("greeter", 50051, down),
        up.port()
    );
    let proxy = TestProxy::start(&yaml).await;
    for _ in 0..6 {
        // Trailers-only UNAVAILABLE carries grpc-status in the headers: Istio retries it.
        let (status, headers, trailers, _) =
            h2_call(proxy.proxy.outbound_addr, "greeter:50051", &[]).await;
        assert_eq!(status, 200);
        assert!(
            headers.get("grpc-status").is_none(),
            "the UNAVAILABLE answer was retried"
        );
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_bodies_stream_through() {
    let b = Backend::start("127.0.0.2", "v1", ok()).await;
    let proxy = TestProxy::start(&service_yaml("upload", 8000, &[("v1", &b)])).await;
    let c = proxy.client();
    let big = Bytes::from(vec![7u8; 300 * 1024]);
    let a = c
        .send(
            "POST",
            "upload:8000",
            "/",
            &[("expect", "100-continue")],
            big,
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-seen-body-len"], "307200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_style_upgrades_are_spliced() {
    // An upstream that accepts any upgrade and then echoes bytes.
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(|mut req: Request<Incoming>| async move {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.unwrap());
                let mut buf = [0u8; 5];
                io.read_exact(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
            });
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(101)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await
            .unwrap();
    });
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: chat\nspec:\n  selector: {{app: chat}}\n  ports:\n  - {{name: http, port: 80}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: chat-1\nspec:\n  address: 127.0.0.2\n  labels: {{app: chat}}\n  ports: {{http: {}}}\n",
        up.port()
    );
    let proxy = TestProxy::start(&yaml).await;
    let mut s = TcpStream::connect(proxy.proxy.outbound_addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    // The bytes after the upgrade are TCP to Istio's metrics, under the request's service.
    drop(s);
    closed_with_bytes(&proxy, "chat.default.svc.cluster.local", 5.0, 5.0).await;
}

/// Waits until one TCP connection to `service` closed, with the bytes it carried each way.
async fn closed_with_bytes(proxy: &TestProxy, service: &str, received: f64, sent: f64) {
    let labels = [
        ("destination_service", service),
        ("request_protocol", "tcp"),
    ];
    let text = wait_for(
        proxy.proxy.stats_addr,
        "istio_tcp_connections_closed_total",
        &labels,
        1.0,
    )
    .await;
    let bytes = |metric| sample(&text, metric, &labels);
    assert_eq!(
        (
            bytes("istio_tcp_received_bytes_total"),
            bytes("istio_tcp_sent_bytes_total")
        ),
        (Some(received), Some(sent)),
        "{text}"
    );
}

/// A TCP server that prefixes every echo with its name.
async fn tcp_echo(ip: &str, name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut out = format!("{name}:").into_bytes();
                    out.extend_from_slice(&buf[..n]);
                    if s.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn tcp_service(vip: &str, v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  clusterIP: {vip}\n  selector: {{app: db}}\n  ports:\n  - {{name: tcp, port: 27017}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: db-v1\nspec:\n  address: {}\n  labels: {{app: db, version: v1}}\n  ports: {{tcp: {}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: db-v2\nspec:\n  address: {}\n  labels: {{app: db, version: v2}}\n  ports: {{tcp: {}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: db\nspec:\n  host: db\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\n",
        v1.ip(),
        v1.port(),
        v2.ip(),
        v2.port()
    )
}

async fn tcp_roundtrip(proxy: SocketAddr, payload: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(payload).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn tcp_routes_send_by_weight_to_subsets() {
    // One runtime thread and a fixed seed make the proxy's draws repeat run to run.
    fastrand::seed(12);
    let v1 = tcp_echo("127.0.0.2", "v1").await;
    let v2 = tcp_echo("127.0.0.3", "v2").await;
    let vip: SocketAddr = "127.10.0.7:27017".parse().unwrap();
    let yaml = tcp_service("127.10.0.7", v1, v2)
        + "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: db
spec:
  hosts: [db]
  tcp:
  - match:
    - port: 27017
    route:
    - destination: {host: db, subset: v1}
      weight: 20
    - destination: {host: db, subset: v2}
      weight: 80
";
    let setup = Setup {
        orig_dst: Arc::new(FixedOriginalDst(vip)),
        ..Setup::default()
    };
    let mut proxy = TestProxy::start_with(&yaml, setup).await;
    let mut v2_count = 0;
    for _ in 0..200 {
        let answer = tcp_roundtrip(proxy.proxy.outbound_addr, b"ping").await;
        assert!(answer == "v1:ping" || answer == "v2:ping", "{answer}");
        v2_count += usize::from(answer == "v2:ping");
    }
    // p=0.8 over 200: sd ≈ 2.8 points; ±10 points is over 3.5 sd.
    assert!((140..=180).contains(&v2_count), "{v2_count} of 200 to v2");
    let entry = proxy.log.recv().await.unwrap();
    assert!(entry
        .upstream_cluster
        .unwrap()
        .starts_with("outbound|27017|v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_routed_by_sni_without_termination() {
    let external = tcp_echo("127.0.0.2", "ext").await;
    let dst: SocketAddr = "127.10.0.9:443".parse().unwrap();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: api\nspec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 443, name: tls, protocol: TLS, targetPort: {}}}\n  endpoints:\n  - address: 127.0.0.2\n",
        external.port()
    );
    let setup = Setup {
        orig_dst: Arc::new(FixedOriginalDst(dst)),
        ..Setup::default()
    };
    let proxy = TestProxy::start_with(&yaml, setup).await;
    let hello = weft_proxy::transport::sni::client_hello("api.example.com");
    let answer = tcp_roundtrip(proxy.proxy.outbound_addr, &hello).await;
    assert!(answer.starts_with("ext:"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_tcp_in_explicit_mode() {
    let v1 = tcp_echo("127.0.0.2", "v1").await;
    let v2 = tcp_echo("127.0.0.3", "v2").await;
    let proxy = TestProxy::start(&tcp_service("127.10.0.7", v1, v2)).await;
    let mut s = TcpStream::connect(proxy.proxy.outbound_addr).await.unwrap();
    s.write_all(b"CONNECT db:27017 HTTP/1.1\r\nHost: db:27017\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        rest.push(b[0]);
    }
    let labels = [
        ("destination_service", "db.default.svc.cluster.local"),
        ("request_protocol", "tcp"),
    ];
    // Opened as the tunnel opens, closed as it closes, with the bytes inside it.
    wait_for(
        proxy.proxy.stats_addr,
        "istio_tcp_connections_opened_total",
        &labels,
        1.0,
    )
    .await;
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.unwrap();
    assert!(&buf == b"v1:ping" || &buf == b"v2:ping");
    drop(s);
    closed_with_bytes(&proxy, "db.default.svc.cluster.local", 4.0, 7.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_and_chunked_requests() {
    let b = Backend::start("127.0.0.2", "v1", ok()).await;
    let proxy = TestProxy::start(&service_yaml("upload", 8000, &[("v1", &b)])).await;
    let mut s = TcpStream::connect(proxy.proxy.outbound_addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: upload:8000\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    // The client sends nothing more until the proxy says go on.
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let mut head = vec![0u8; 512];
    let n = s.read(&mut head).await.unwrap();
    let text = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 200") && text.contains("x-seen-body-len: 5"),
        "{text}"
    );

    let mut s = TcpStream::connect(proxy.proxy.outbound_addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: upload:8000\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nWeft\r\n6\r\n mesh!\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.to_ascii_lowercase().contains("x-seen-body-len: 10"),
        "{answer}"
    );
}

//! Malformed and hostile input never takes the proxy down: after each, a normal request
//! still succeeds.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GARBAGE: &[&[u8]] = &[
    b"\x00\x01\x02\x03\xff\xfe",
    b"GET\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    b"GET http://[::1 HTTP/1.1\r\n\r\n",
    b"GET /%%%% HTTP/1.1\r\nHost: reviews:9080\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: reviews:9080\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nHost: reviews:99999999\r\n\r\n",
    b"CONNECT nowhere HTTP/1.1\r\n\r\n",
    b"CONNECT reviews:notaport HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x01\x00\x00\x00\x00\x00garbage",
    b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_capture_port_is_survived() {
    let v1 = Backend::start("127.0.0.2", "v1", ok()).await;
    let proxy = TestProxy::start(&service_yaml("reviews", 9080, &[("v1", &v1)])).await;
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: reviews:9080\r\nx-big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let mut inputs: Vec<Vec<u8>> = GARBAGE.iter().map(|g| g.to_vec()).collect();
    inputs.push(huge_header.into_bytes());
    for input in inputs {
        let mut s = tokio::net::TcpStream::connect(proxy.proxy.outbound_addr)
            .await
            .unwrap();
        let _ = s.write_all(&input).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_end(&mut sink)).await;
        let a = proxy.client().get("reviews:9080", "/", &[]).await;
        assert_eq!(
            a.status,
            200,
            "after {:?}",
            String::from_utf8_lossy(&input[..input.len().min(60)])
        );
    }
}

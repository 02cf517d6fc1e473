//! The load generator against the benchmark upstream, on real sockets.

use std::time::Duration;
use weft_bench::load::{run, Load, Mode, Protocol};

async fn upstream(addr: &str) -> std::net::SocketAddr {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    tokio::spawn(weft_bench::server::serve(addr));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("upstream did not listen");
}

fn load(target: std::net::SocketAddr, protocol: Protocol, mode: Mode) -> Load {
    Load {
        target,
        authority: "bench:8080".into(),
        path: "/x".into(),
        protocol,
        mode,
        connections: 4,
        duration: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_holds_its_rate_for_http1_and_grpc() {
    let target = upstream("127.0.0.31:8080").await;
    for protocol in [Protocol::Http1, Protocol::GrpcUnary] {
        let outcome = run(&load(target, protocol, Mode::OpenLoop { rate: 400 }))
            .await
            .unwrap();
        assert_eq!(outcome.errors, 0, "{protocol:?}");
        // 400 rps for 1 s, give or take the last scheduling slot per connection.
        assert!(
            (390..=404).contains(&outcome.requests),
            "{protocol:?}: {}",
            outcome.requests
        );
        assert!(outcome.p50_us <= outcome.p99_us && outcome.p99_us <= outcome.max_us);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_saturates_and_counts_failures() {
    let target = upstream("127.0.0.32:8080").await;
    let outcome = run(&load(target, Protocol::Http1, Mode::ClosedLoop))
        .await
        .unwrap();
    assert!(outcome.requests > 500 && outcome.errors == 0, "{outcome:?}");
    // Nothing listens here: connecting fails loudly.
    let dead = std::net::TcpListener::bind("127.0.0.33:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(run(&load(dead, Protocol::Http1, Mode::ClosedLoop))
        .await
        .is_err());
}

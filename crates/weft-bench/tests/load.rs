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

/// Connections from this process to `addr` that are established, from /proc/net/tcp.
fn established_to(addr: std::net::SocketAddrV4) -> usize {
    let ip = u32::from_le_bytes(addr.ip().octets());
    let remote = format!("{ip:08X}:{:04X}", addr.port());
    std::fs::read_to_string("/proc/self/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_stay_open_until_dropped() {
    let target = upstream("127.0.0.34:8080").await;
    let std::net::SocketAddr::V4(v4) = target else {
        unreachable!()
    };
    let idle = weft_bench::load::open_idle(&Load {
        connections: 50,
        ..load(target, Protocol::Http1, Mode::ClosedLoop)
    })
    .await
    .unwrap();
    assert_eq!(established_to(v4), 50);
    drop(idle);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while established_to(v4) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

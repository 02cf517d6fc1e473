//! What idle connections cost a `weft proxy` process, read from its `/proc/PID/status`
//! (VmRSS): HTTP/1.1 keep-alive connections that have served one request, connections that
//! never sent a byte (waiting in protocol sniffing, which waits for the client as Istio's
//! `protocolDetectionTimeout: 0s` does), and how much of it
//! comes back once they close. Prints the figures; asserts upper bounds with room for
//! allocator noise.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 2000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits until the proxy holds `want` file descriptors, then until its RSS stops moving
/// (the allocator returns freed pages after a short delay); returns the RSS.
async fn settled(pid: u32, want: impl Fn(usize) -> bool) -> u64 {
    let fds = poll_until(Duration::from_secs(30), || {
        std::future::ready(Some(open_fds(pid)).filter(|n| want(*n)))
    })
    .await;
    assert!(fds.is_some(), "the proxy holds {} fds", open_fds(pid));
    let mut last = rss_kib(pid);
    poll_until(Duration::from_secs(10), || {
        let now = rss_kib(pid);
        let stable = now == last;
        last = now;
        std::future::ready(stable.then_some(now))
    })
    .await
    .unwrap_or(last)
}

async fn request(stream: &mut TcpStream, host: &str) {
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    // The backend's answer is small and has a length: read until its body has arrived.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"v1") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

struct Figures {
    per_connection_kib: f64,
    /// Of what the connections grew, the share given back once they closed, with no
    /// traffic since (at least the share wanted, if it got there).
    returned: f64,
    /// How long after the close that took.
    returned_in: Duration,
}

/// Opens `CONNECTIONS` connections to `to` (each prepared by `prepare`), reads the proxy's
/// RSS, closes them, then waits until `want` of the growth has been returned (or 15 s).
async fn measure<F, Fut>(
    pid: u32,
    to: SocketAddr,
    (fds_each, want): (usize, f64),
    prepare: F,
) -> Figures
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = TcpStream>,
{
    let base_fds = open_fds(pid);
    // A few descriptors of slack: the upstream pool to the backend grows and shrinks with
    // the traffic in between.
    let closed = |n: usize| n <= base_fds + 4;
    let base = settled(pid, closed).await;
    let mut open = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        open.push(prepare(TcpStream::connect(to).await.unwrap()).await);
    }
    // A few descriptors of slack: a warm-up connection may still have been closing.
    let peak = settled(pid, |n| n + 8 >= base_fds + CONNECTIONS * fds_each).await;
    drop(open);
    let closed_at = tokio::time::Instant::now();
    settled(pid, closed).await;
    let grown = peak.saturating_sub(base).max(1) as f64;
    let returned = || peak.saturating_sub(rss_kib(pid)) as f64 / grown;
    let enough = poll_until(Duration::from_secs(15), || {
        std::future::ready(Some(returned()).filter(|r| *r >= want))
    })
    .await;
    Figures {
        per_connection_kib: grown / CONNECTIONS as f64,
        returned: enough.unwrap_or_else(returned),
        returned_in: closed_at.elapsed(),
    }
}

/// A proxy knowing `app:9080` at `backend` (inbound sends there too), ready and warmed up.
async fn proxy(backend: SocketAddr) -> AppProxy {
    let p = AppProxy::start(backend, &["--access-log", "off"]).await;
    // Warm up what the first connections allocate once (pools, caches, thread stacks).
    for _ in 0..50 {
        let mut s = TcpStream::connect(p.outbound).await.unwrap();
        request(&mut s, "app:9080").await;
    }
    p
}

/// One socket per connection, and the share of the growth to have back once they close:
/// measured 77-96 % and 77-92 % (each worker collects its heap when it parks, at most every
/// 5 ms, and the heartbeat in `allocator.rs` returns what that freed); what stays is pages
/// still partly in use.
const KEEP_ALIVE: (usize, f64) = (1, 0.6);
const SILENT: (usize, f64) = (1, 0.6);

/// The two tests open thousands of connections each; run together, one's burst takes the
/// ephemeral ports and CPU the other's measurement counts on.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_little_and_much_of_it_returns_when_they_close() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let backend = Backend::start("127.0.0.1", "v1").await;

    let mut p = proxy(backend.addr).await;
    let keep_alive = measure(
        p.weft.child.id(),
        p.outbound,
        KEEP_ALIVE,
        |mut s| async move {
            request(&mut s, "app:9080").await;
            s
        },
    )
    .await;
    assert!(p.weft.exited().is_none(), "{}", p.weft.output());
    drop(p);

    // Never a byte: the connection waits in sniffing for the client to speak (one socket).
    let mut p = proxy(backend.addr).await;
    let silent = measure(p.weft.child.id(), p.inbound, SILENT, |s| async move { s }).await;
    assert!(p.weft.exited().is_none(), "{}", p.weft.output());

    for (what, f) in [
        ("HTTP/1.1 keep-alive after one request", &keep_alive),
        ("never spoke (waiting in sniffing)", &silent),
    ] {
        eprintln!(
            "{what}: {:.1} KiB per connection; {:.0} % returned {:.1} s after the close",
            f.per_connection_kib,
            f.returned * 100.0,
            f.returned_in.as_secs_f64()
        );
    }
    // hyper frees its read and head buffers while a connection waits for its next request
    // (vendor/hyper, Weft's patch): what stays is the task, the connection's state and the
    // sockets' registrations. Measured 6.7 KiB (19.3 KiB with hyper's 8 KiB read buffer and
    // 8 KiB head buffer held until the close) and 3.4 KiB; the keep-alive bound is issue
    // 14's goal of 8 KiB per idle connection.
    assert!(
        keep_alive.per_connection_kib < 8.0,
        "{:.1} KiB",
        keep_alive.per_connection_kib
    );
    assert!(
        silent.per_connection_kib < 5.0,
        "{:.1} KiB",
        silent.per_connection_kib
    );
    for (f, (_, want)) in [(&keep_alive, KEEP_ALIVE), (&silent, SILENT)] {
        assert!(f.returned >= want, "{:.0} % returned", f.returned * 100.0);
    }
}

/// A burst of connections fits the accept queue (the system's somaxconn, not tokio's 128):
/// the proxy has no config yet, so it accepts nothing and every handshake waits in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_fits_the_accept_queue() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let burst = somaxconn.min(1000);
    let [control] = free_addrs::<1>();
    let addrs = free_addrs::<4>();
    let [outbound, _, _, health] = addrs;
    let proxy = Weft::spawn(&proxy_args(control, "burst", addrs));
    let c = client();
    let up = poll_until(DEADLINE, || async {
        send(&c, "GET", health, "localhost", "/healthz/ready", &[])
            .await
            .ok()
    })
    .await;
    assert!(up.is_some(), "{}", proxy.output());
    let connects: Vec<_> = (0..burst)
        .map(|_| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_secs(3),
                TcpStream::connect(outbound),
            ))
        })
        .collect();
    let mut open = Vec::new();
    for c in connects {
        if let Ok(Ok(s)) = c.await.unwrap() {
            open.push(s);
        }
    }
    assert_eq!(open.len(), burst, "handshakes that completed");
}

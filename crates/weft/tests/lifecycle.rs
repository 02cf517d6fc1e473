//! The `weft proxy` process's life cycle, as a platform meets it: SIGTERM drains (inbound
//! closes, requests in flight finish, keep-alive and HTTP/2 connections are told to go,
//! readiness fails, the outbound side keeps serving the app) and the process exits 0 at the
//! end of the drain period, cutting what still runs; a second signal or `/quitquitquit`
//! exits at once.

mod support;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Answers `/slow/MS` MS milliseconds late, anything else at once; counts the requests it
/// has received, so a test knows one is in flight.
struct SlowBackend {
    addr: SocketAddr,
    received: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SlowBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlowBackend {
    async fn start() -> SlowBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (count, received) = watch::channel(0usize);
        let count = std::sync::Arc::new(count);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let count = count.clone();
                        async move {
                            count.send_modify(|n| *n += 1);
                            if let Some(ms) = req.uri().path().strip_prefix("/slow/") {
                                let ms = ms.parse().unwrap_or(0);
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"done"),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        SlowBackend {
            addr,
            received,
            task,
        }
    }

    /// Waits until the backend has received `n` requests in all.
    async fn wait_received(&mut self, n: usize) {
        tokio::time::timeout(DEADLINE, self.received.wait_for(|got| *got >= n))
            .await
            .expect("the request reached the backend")
            .unwrap();
    }
}

/// A proxy whose inbound side sends to `backend` and whose outbound side knows the service
/// `app:9080` at `backend`, draining for `drain`; ready when this returns.
async fn proxy(backend: SocketAddr, drain: &str) -> AppProxy {
    AppProxy::start(backend, &["--drain-duration", drain]).await
}

/// Waits until 15021's `/healthz/ready` answers `want`.
async fn readiness_is(p: &AppProxy, want: u16) -> bool {
    let c = client();
    poll_until(DEADLINE, || async {
        let a = send(&c, "GET", p.health, "localhost", "/healthz/ready", &[])
            .await
            .ok()?;
        (a.status == want).then_some(())
    })
    .await
    .is_some()
}

fn signal(p: &AppProxy, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &p.weft.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// An HTTP/1.1 connection of its own (no pool), as an app's keep-alive connection.
async fn http1(
    to: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(to).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Frames of a hand-written h2c connection: the preface, our SETTINGS, then whatever the
/// server sends; true once a GOAWAY (type 7) arrives.
async fn h2_sees_goaway(mut stream: TcpStream, within: Duration) -> bool {
    let read = async {
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await?;
            match (head[3], head[4]) {
                (7, _) => return Ok::<bool, std::io::Error>(true),
                // The server's SETTINGS: acknowledge them, as a client must.
                (4, 0) => stream.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await?,
                _ => {}
            }
        }
    };
    matches!(tokio::time::timeout(within, read).await, Ok(Ok(true)))
}

async fn h2c(to: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_inbound_lets_requests_finish_and_exits_0_after_the_drain_period() {
    let mut backend = SlowBackend::start().await;
    let mut p = proxy(backend.addr, "2s").await;
    let host = "app.default.svc.cluster.local";

    // An idle keep-alive connection that has served a request, an HTTP/2 connection, a
    // request that finishes within the drain, one that outlasts it.
    let (mut idle, idle_conn) = http1(p.inbound).await;
    let first = idle.send_request(get(host, "/")).await.unwrap();
    assert_eq!(first.status(), 200);
    first.into_body().collect().await.unwrap();
    let h2 = h2c(p.inbound).await;
    let (mut finishing, _finishing_conn) = http1(p.inbound).await;
    let finishing =
        tokio::spawn(async move { finishing.send_request(get(host, "/slow/1000")).await });
    let (mut cut, _cut_conn) = http1(p.inbound).await;
    let cut = tokio::spawn(async move {
        let r = cut.send_request(get(host, "/slow/60000")).await?;
        r.into_body().collect().await.map(|b| b.to_bytes())
    });
    backend.wait_received(3).await;

    let sigterm = tokio::time::Instant::now();
    signal(&p, "TERM");
    assert!(
        readiness_is(&p, 503).await,
        "draining fails readiness\n{}",
        p.weft.output()
    );
    // New connections are refused; the outbound side still serves the app. One that raced
    // the listener's close may be reset from its backlog first.
    let refused = poll_until(DEADLINE, || async {
        TcpStream::connect(p.inbound)
            .await
            .err()
            .map(|e| e.kind())
            .filter(|k| *k == std::io::ErrorKind::ConnectionRefused)
    })
    .await;
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
    let c = client();
    let out = send(&c, "GET", p.outbound, "app:9080", "/", &[]).await;
    assert_eq!(out.map(|a| a.status.as_u16()), Ok(200));

    // The request in flight finishes, told that the connection closes after it.
    let finished = finishing
        .await
        .unwrap()
        .expect("the request in flight finishes");
    assert_eq!(finished.status(), 200);
    assert_eq!(finished.headers()["connection"], "close");
    // The idle keep-alive connection is closed; the HTTP/2 client is sent GOAWAY.
    assert!(
        poll_until(DEADLINE, || std::future::ready(
            idle_conn.is_finished().then_some(())
        ))
        .await
        .is_some(),
        "the idle keep-alive connection stays open"
    );
    assert!(h2_sees_goaway(h2, DEADLINE).await, "no GOAWAY");

    // At the end of the drain period the process exits 0, cutting the request still running.
    let status = p
        .weft
        .wait_exit(Duration::from_secs(2 + 3))
        .await
        .unwrap_or_else(|| panic!("still running after the drain\n{}", p.weft.output()));
    assert!(status.success(), "{status:?}\n{}", p.weft.output());
    assert!(
        sigterm.elapsed() >= Duration::from_secs(2),
        "exited before the drain period: {:?}",
        sigterm.elapsed()
    );
    assert!(cut.await.unwrap().is_err(), "the long request was not cut");
    assert!(p.weft.stderr().contains("SIGTERM: draining for 2s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_or_quitquitquit_exits_at_once() {
    let backend = SlowBackend::start().await;
    let mut p = proxy(backend.addr, "1m").await;
    signal(&p, "INT");
    assert!(readiness_is(&p, 503).await, "{}", p.weft.output());
    signal(&p, "TERM");
    let status = p.weft.wait_exit(DEADLINE).await;
    assert!(status.is_some_and(|s| s.success()), "{}", p.weft.output());

    // pilot-agent's /quitquitquit: the app is done, nothing to drain for.
    let mut p = proxy(backend.addr, "1m").await;
    let quit = send(
        &client(),
        "POST",
        p.admin,
        "localhost",
        "/quitquitquit",
        &[],
    )
    .await;
    assert_eq!(quit.map(|a| a.status.as_u16()), Ok(200));
    let status = p.weft.wait_exit(DEADLINE).await;
    assert!(status.is_some_and(|s| s.success()), "{}", p.weft.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_drain_the_prestop_hook_starts_the_drain_before_the_signal() {
    let backend = SlowBackend::start().await;
    let mut p = proxy(backend.addr, "30s").await;
    let drain = [
        "drain".to_string(),
        "--admin".into(),
        p.admin.to_string(),
        "--wait".into(),
        "0s".into(),
    ];
    let (status, out, err) = run_weft(&drain).await;
    assert!(status.success(), "{out}{err}");
    assert!(readiness_is(&p, 503).await, "{}", p.weft.output());
    // Draining, not exiting: the process waits for its signal.
    assert!(p.weft.exited().is_none());
    let refused = poll_until(DEADLINE, || async {
        TcpStream::connect(p.inbound).await.is_err().then_some(())
    })
    .await;
    assert!(refused.is_some(), "the inbound listener closed");
    let (status, _, _) = run_weft(&drain).await;
    assert!(status.success(), "draining twice is fine");
}

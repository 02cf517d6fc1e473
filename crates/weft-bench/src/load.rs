//! The load generator. Open loop: requests are scheduled at a constant rate and latency is
//! measured from when each request was *meant* to be sent, so a stalled server shows up in
//! the percentiles instead of slowing the generator down (no coordinated omission). Closed
//! loop: every connection sends back to back, for the maximum throughput.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// HTTP/1.1 GET, one request in flight per connection.
    Http1,
    /// gRPC unary over HTTP/2 with prior knowledge.
    GrpcUnary,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Mode {
    /// This many requests a second in all, spread over the connections.
    OpenLoop { rate: u32 },
    /// As fast as answers come back.
    ClosedLoop,
}

#[derive(Debug, Clone)]
pub struct Load {
    pub target: SocketAddr,
    /// Host / :authority the requests name.
    pub authority: String,
    pub path: String,
    pub protocol: Protocol,
    pub mode: Mode,
    pub connections: usize,
    pub duration: Duration,
}

/// Latency percentiles in microseconds, and what was achieved.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub throughput: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// (percentile, microseconds) for plotting.
    pub curve: Vec<(f64, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// A 5-byte gRPC frame header around an empty message.
const GRPC_EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

impl Sender {
    async fn connect(load: &Load) -> Result<Sender, LoadError> {
        let err = |e: &dyn std::fmt::Display| LoadError::Connect(load.target, e.to_string());
        let stream = TcpStream::connect(load.target).await.map_err(|e| err(&e))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        Ok(match load.protocol {
            Protocol::Http1 => {
                let (send, conn) = http1::handshake(io).await.map_err(|e| err(&e))?;
                tokio::spawn(conn);
                Sender::H1(send)
            }
            Protocol::GrpcUnary => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| err(&e))?;
                tokio::spawn(conn);
                Sender::H2(send)
            }
        })
    }

    /// One request; true when it succeeded (200, and grpc-status 0 for gRPC).
    async fn call(&mut self, load: &Load) -> bool {
        match self {
            Sender::H1(send) => {
                let req = Request::get(&load.path)
                    .header("host", &load.authority)
                    .body(Full::new(Bytes::new()))
                    .expect("valid request");
                if send.ready().await.is_err() {
                    return false;
                }
                match send.send_request(req).await {
                    Ok(resp) => resp.status() == 200 && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                }
            }
            Sender::H2(send) => {
                let req = Request::post(format!("http://{}{}", load.authority, load.path))
                    .version(Version::HTTP_2)
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(Full::new(Bytes::from_static(GRPC_EMPTY_MESSAGE)))
                    .expect("valid request");
                if send.ready().await.is_err() {
                    return false;
                }
                match send.send_request(req).await {
                    Ok(resp) if resp.status() == 200 => match resp.into_body().collect().await {
                        Ok(body) => body
                            .trailers()
                            .and_then(|t| t.get("grpc-status"))
                            .is_some_and(|s| s == "0"),
                        Err(_) => false,
                    },
                    _ => false,
                }
            }
        }
    }
}

/// `load.connections` kept-alive connections that each carried one request and now sit
/// idle, held open until dropped.
pub struct Idle {
    _senders: Vec<Sender>,
}

/// Opens the idle connections of [`Idle`], one request on each, one connection at a time.
pub async fn open_idle(load: &Load) -> Result<Idle, LoadError> {
    let mut senders = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let mut sender = Sender::connect(load).await?;
        if !sender.call(load).await {
            return Err(LoadError::Connect(
                load.target,
                "the first request on an idle connection failed".into(),
            ));
        }
        senders.push(sender);
    }
    Ok(Idle { _senders: senders })
}

/// Runs `load` and reports its percentiles.
pub async fn run(load: &Load) -> Result<Outcome, LoadError> {
    let mut senders = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        senders.push(Sender::connect(load).await?);
    }
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + load.duration;
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut sender)| {
            let load = load.clone();
            tokio::spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let (mut ok, mut errors) = (0u64, 0u64);
                match load.mode {
                    Mode::OpenLoop { rate } => {
                        let per_connection = f64::from(rate.max(1)) / load.connections as f64;
                        let interval = Duration::from_secs_f64(1.0 / per_connection);
                        // Stagger connections so the aggregate schedule is even.
                        let mut intended =
                            start + interval.mul_f64(i as f64 / load.connections as f64);
                        let mut previous_done = start;
                        while intended < end {
                            tokio::time::sleep_until(intended).await;
                            // A request that waited for the previous answer counts from when it
                            // should have gone (no coordinated omission); one that only waited
                            // for the timer (1 ms granularity) counts from when it went.
                            let from = if previous_done > intended {
                                intended
                            } else {
                                Instant::now()
                            };
                            let success = sender.call(&load).await;
                            previous_done = Instant::now();
                            let latency = previous_done.saturating_duration_since(from);
                            let _ = hist.record(latency.as_micros().max(1) as u64);
                            if success {
                                ok += 1
                            } else {
                                errors += 1
                            }
                            intended += interval;
                        }
                    }
                    Mode::ClosedLoop => {
                        tokio::time::sleep_until(start).await;
                        while Instant::now() < end {
                            let sent = Instant::now();
                            let success = sender.call(&load).await;
                            let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                            if success {
                                ok += 1
                            } else {
                                errors += 1
                            }
                        }
                    }
                }
                (hist, ok, errors)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut ok, mut errors) = (0, 0);
    for task in tasks {
        if let Ok((h, o, e)) = task.await {
            let _ = hist.add(&h);
            ok += o;
            errors += e;
        }
    }
    let seconds = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(load.duration.as_secs_f64());
    let at = |q: f64| hist.value_at_quantile(q);
    let curve = [
        0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999,
    ]
    .into_iter()
    .map(|q| (q * 100.0, at(q)))
    .collect();
    Ok(Outcome {
        requests: ok,
        errors,
        seconds,
        throughput: ok as f64 / load.duration.as_secs_f64(),
        p50_us: at(0.5),
        p90_us: at(0.9),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: hist.max(),
        curve,
    })
}

//! Sending one request to one endpoint, on pooled connections: HTTP/1.1 keeps idle
//! keep-alive connections per endpoint; HTTP/2 shares one multiplexed connection per
//! endpoint, with `:authority` naming the service the caller used (not the endpoint
//! address). Both retire a connection after `maxRequestsPerConnection` requests; idle
//! HTTP/1.1 connections are dropped after `idleTimeout`. Plaintext and mTLS connections to
//! an endpoint are pooled apart.

use super::config::Limits;
use super::endpoint::Endpoint;
use super::stats::ClusterStats;
use crate::http::body::RequestBody;
use crate::transport;
use crate::transport::tls::{Io, Origination};
use http::{header, request::Parts, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a try got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: Envoy's `UF`.
    Connect(String),
    /// The TCP connection was made but its TLS handshake failed: `UF`, with Envoy's
    /// `UPSTREAM_TRANSPORT_FAILURE_REASON`.
    Tls(String),
    /// The connection or stream broke before a response: Envoy's `UC`.
    Reset(String),
}

pub struct Upstream {
    h1: Arc<H1Pool>,
    h2: H2Pool,
}

impl Upstream {
    /// Pools within `limits`; each connection counts in `stats` while it lives.
    pub fn new(limits: &Limits, stats: Arc<ClusterStats>) -> Upstream {
        let quota = limits.max_requests_per_connection;
        Upstream {
            h1: Arc::new(H1Pool {
                idle: Mutex::new(HashMap::new()),
                connect_timeout: limits.connect_timeout,
                idle_timeout: limits.idle_timeout,
                max_requests_per_connection: quota,
                stats: stats.clone(),
            }),
            h2: H2Pool {
                conns: Mutex::new(HashMap::new()),
                connect_timeout: limits.connect_timeout,
                max_requests_per_connection: quota,
                stats,
            },
        }
    }

    /// Sends `parts` + `body` to `endpoint` over HTTP/2 or HTTP/1.1, naming the try in
    /// `x-envoy-attempt-count` when `attempt` is given (1 for the first); over mTLS with
    /// `tls`. Returns the response and, over mTLS, the server's SPIFFE ID.
    pub async fn send(
        &self,
        h2: bool,
        endpoint: &Endpoint,
        tls: Option<&Origination>,
        parts: &Parts,
        body: RequestBody,
        attempt: Option<u32>,
    ) -> Result<Sent, SendError> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.headers_mut() = parts.headers.clone();
        if let Some(n) = attempt {
            req.headers_mut().insert(
                crate::http::headers::X_ENVOY_ATTEMPT_COUNT,
                http::HeaderValue::from(n),
            );
        }
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| endpoint.authority.clone());
        if h2 {
            // HTTP/2 names the service in :authority; Host would be a second, conflicting name.
            req.headers_mut().remove(header::HOST);
            *req.uri_mut() = format!("http://{authority}{path}").parse().map_err(|_| {
                SendError::Reset(format!(
                    "cannot make a request URI from authority {authority:?}"
                ))
            })?;
            *req.version_mut() = Version::HTTP_2;
            self.h2.send(&endpoint.authority, tls, req).await
        } else {
            if !req.headers().contains_key(header::HOST) {
                let value = authority
                    .parse()
                    .map_err(|_| SendError::Reset(format!("invalid authority {authority:?}")))?;
                req.headers_mut().insert(header::HOST, value);
            }
            *req.uri_mut() = path
                .parse::<Uri>()
                .unwrap_or_else(|_| Uri::from_static("/"));
            *req.version_mut() = Version::HTTP_11;
            self.h1.send(&endpoint.authority, tls, req).await
        }
    }
}

/// A response and who sent it.
pub struct Sent {
    pub response: Response<Incoming>,
    /// The server's SPIFFE ID, when the connection is mTLS.
    pub peer: Option<Arc<str>>,
}

/// Connects within `timeout`, the TLS handshake included.
pub async fn connect(
    addr: &str,
    tls: Option<&Origination>,
    timeout: Duration,
) -> Result<(Io, Option<Arc<str>>), SendError> {
    let connected = tokio::time::timeout(timeout, async {
        let stream = transport::connect::connect(addr)
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok((Io::Plain(stream), None)),
            Some(tls) => tls
                .connect(stream)
                .await
                .map_err(|e| SendError::Tls(e.to_string())),
        }
    })
    .await;
    connected.map_err(|_| SendError::Connect(format!("no answer within {timeout:?}")))?
}

/// Index of a connection's pool per endpoint: plaintext or mTLS.
fn secured(tls: Option<&Origination>) -> usize {
    usize::from(tls.is_some())
}

/// The calling worker's entry of a per-worker list: a connection serves requests of the
/// worker that made it only, so that its task and theirs run on one thread.
fn for_worker<T: Default>(per_worker: &mut Vec<T>) -> &mut T {
    let i = crate::workers::current();
    if per_worker.len() <= i {
        per_worker.resize_with(i + 1, T::default);
    }
    &mut per_worker[i]
}

/// Idle HTTP/1.1 keep-alive connections per endpoint and worker, plaintext and mTLS.
struct H1Pool {
    idle: Mutex<HashMap<String, Vec<[Vec<Idle>; 2]>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_requests_per_connection: usize,
    stats: Arc<ClusterStats>,
}

struct Idle {
    send: http1::SendRequest<RequestBody>,
    used: usize,
    since: Instant,
    peer: Option<Arc<str>>,
}

impl H1Pool {
    async fn send(
        self: &Arc<Self>,
        addr: &str,
        tls: Option<&Origination>,
        req: Request<RequestBody>,
    ) -> Result<Sent, SendError> {
        let pool = secured(tls);
        let (mut send, used, peer) = match self.checkout(addr, pool) {
            Some(found) => found,
            None => {
                let (io, peer) = connect(addr, tls, self.connect_timeout).await?;
                let (send, conn) = http1::Builder::new()
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| SendError::Connect(format!("HTTP/1.1 handshake: {e}")))?;
                let active = self.stats.connection();
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                    drop(active);
                });
                (send, 0, peer)
            }
        };
        let response = send
            .send_request(req)
            .await
            .map_err(|e| SendError::Reset(e.to_string()))?;
        let used = used + 1;
        if self.max_requests_per_connection == 0 || used < self.max_requests_per_connection {
            // The connection takes another request once this response has been read to the
            // end; one closed, upgraded or abandoned mid-body never comes back.
            let pools = self.clone();
            let addr = addr.to_string();
            let peer = peer.clone();
            tokio::spawn(async move {
                if send.ready().await.is_ok() {
                    let idle = Idle {
                        send,
                        used,
                        since: Instant::now(),
                        peer,
                    };
                    let mut pools = pools.idle.lock();
                    for_worker(pools.entry(addr).or_default())[pool].push(idle);
                }
            });
        }
        Ok(Sent { response, peer })
    }

    fn checkout(
        &self,
        addr: &str,
        pool: usize,
    ) -> Option<(http1::SendRequest<RequestBody>, usize, Option<Arc<str>>)> {
        let mut idle = self.idle.lock();
        let list = &mut for_worker(idle.get_mut(addr)?)[pool];
        while let Some(conn) = list.pop() {
            if conn.send.is_ready() && conn.since.elapsed() < self.idle_timeout {
                return Some((conn.send, conn.used, conn.peer));
            }
        }
        None
    }
}

/// One HTTP/2 connection per endpoint and worker (and one for mTLS), shared by every
/// request to it from that worker.
struct H2Pool {
    conns: Mutex<HashMap<String, Vec<[Option<Slot>; 2]>>>,
    connect_timeout: Duration,
    max_requests_per_connection: usize,
    stats: Arc<ClusterStats>,
}

struct Slot {
    send: http2::SendRequest<RequestBody>,
    used: usize,
    peer: Option<Arc<str>>,
}

impl H2Pool {
    async fn send(
        &self,
        addr: &str,
        tls: Option<&Origination>,
        req: Request<RequestBody>,
    ) -> Result<Sent, SendError> {
        let (mut send, peer) = self.checkout(addr, tls).await?;
        send.ready()
            .await
            .map_err(|e| SendError::Reset(e.to_string()))?;
        let response = send
            .send_request(req)
            .await
            .map_err(|e| SendError::Reset(e.to_string()))?;
        Ok(Sent { response, peer })
    }

    async fn checkout(
        &self,
        addr: &str,
        tls: Option<&Origination>,
    ) -> Result<(http2::SendRequest<RequestBody>, Option<Arc<str>>), SendError> {
        let pool = secured(tls);
        {
            let mut conns = self.conns.lock();
            if let Some(slot) = conns
                .get_mut(addr)
                .and_then(|slots| for_worker(slots)[pool].as_mut())
            {
                let quota_left = self.max_requests_per_connection == 0
                    || slot.used < self.max_requests_per_connection;
                if !slot.send.is_closed() && quota_left {
                    slot.used += 1;
                    return Ok((slot.send.clone(), slot.peer.clone()));
                }
                if let Some(slots) = conns.get_mut(addr) {
                    for_worker(slots)[pool] = None;
                }
            }
        }
        let (io, peer) = connect(addr, tls, self.connect_timeout).await?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| SendError::Connect(format!("HTTP/2 handshake: {e}")))?;
        let active = self.stats.connection();
        tokio::spawn(async move {
            let _ = conn.await;
            drop(active);
        });
        let mut conns = self.conns.lock();
        for_worker(conns.entry(addr.to_string()).or_default())[pool] = Some(Slot {
            send: send.clone(),
            used: 1,
            peer: peer.clone(),
        });
        Ok((send, peer))
    }
}

//! Sending one request to one endpoint. HTTP/1.1 goes through hyper's pooled client;
//! HTTP/2 through one multiplexed connection per endpoint, so `:authority` carries the
//! service name the caller used (not the endpoint address) and `maxRequestsPerConnection`
//! can retire a connection after its quota of streams.

use super::config::Limits;
use super::endpoint::Endpoint;
use crate::http::body::RequestBody;
use http::{header, request::Parts, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Why a try got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: Envoy's `UF`.
    Connect(String),
    /// The connection or stream broke before a response: Envoy's `UC`.
    Reset(String),
}

pub struct Upstream {
    h1: Client<HttpConnector, RequestBody>,
    h2: H2Pool,
}

impl Upstream {
    pub fn new(limits: &Limits) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(limits.idle_timeout);
        if limits.max_requests_per_connection == 1 {
            builder.pool_max_idle_per_host(0);
        }
        Upstream {
            h1: builder.build(connector),
            h2: H2Pool {
                conns: Mutex::new(HashMap::new()),
                connect_timeout: limits.connect_timeout,
                max_requests_per_connection: limits.max_requests_per_connection,
            },
        }
    }

    /// Sends `parts` + `body` to `endpoint` over HTTP/2 or HTTP/1.1.
    pub async fn send(
        &self,
        h2: bool,
        endpoint: &Endpoint,
        parts: &Parts,
        body: RequestBody,
    ) -> Result<Response<Incoming>, SendError> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.headers_mut() = parts.headers.clone();
        if h2 {
            // HTTP/2 names the service in :authority; Host would be a second, conflicting name.
            let authority = req
                .headers_mut()
                .remove(header::HOST)
                .and_then(|h| h.to_str().ok().map(str::to_string))
                .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                .unwrap_or_else(|| endpoint.authority.clone());
            *req.uri_mut() = uri(&authority, path)?;
            *req.version_mut() = Version::HTTP_2;
            self.h2.send(&endpoint.authority, req).await
        } else {
            *req.uri_mut() = uri(&endpoint.authority, path)?;
            *req.version_mut() = Version::HTTP_11;
            self.h1.request(req).await.map_err(classify)
        }
    }
}

fn uri(authority: &str, path: &str) -> Result<Uri, SendError> {
    format!("http://{authority}{path}").parse().map_err(|_| {
        SendError::Reset(format!(
            "cannot make a request URI from authority {authority:?}"
        ))
    })
}

fn classify(e: hyper_util::client::legacy::Error) -> SendError {
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        chain = s.to_string();
        source = s.source();
    }
    if e.is_connect() {
        SendError::Connect(chain)
    } else {
        SendError::Reset(format!("{e}: {chain}"))
    }
}

/// One HTTP/2 connection per endpoint, shared by every request to it.
struct H2Pool {
    conns: Mutex<HashMap<String, Slot>>,
    connect_timeout: Duration,
    max_requests_per_connection: usize,
}

struct Slot {
    send: SendRequest<RequestBody>,
    used: usize,
}

impl H2Pool {
    async fn send(
        &self,
        addr: &str,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut send = self.checkout(addr).await?;
        send.ready()
            .await
            .map_err(|e| SendError::Reset(e.to_string()))?;
        send.send_request(req)
            .await
            .map_err(|e| SendError::Reset(e.to_string()))
    }

    async fn checkout(&self, addr: &str) -> Result<SendRequest<RequestBody>, SendError> {
        {
            let mut conns = self.conns.lock().expect("pool lock");
            if let Some(slot) = conns.get_mut(addr) {
                let quota_left = self.max_requests_per_connection == 0
                    || slot.used < self.max_requests_per_connection;
                if !slot.send.is_closed() && quota_left {
                    slot.used += 1;
                    return Ok(slot.send.clone());
                }
                conns.remove(addr);
            }
        }
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    SendError::Connect(format!("no answer within {:?}", self.connect_timeout))
                })?
                .map_err(|e| SendError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(conn);
        self.conns.lock().expect("pool lock").insert(
            addr.to_string(),
            Slot {
                send: send.clone(),
                used: 1,
            },
        );
        Ok(send)
    }
}

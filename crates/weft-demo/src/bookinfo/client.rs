//! The outbound client every Bookinfo service shares: `GET` a JSON document from another
//! service with a timeout per attempt, a number of attempts, the caller's trace headers,
//! and optionally through an explicit HTTP proxy (a Weft sidecar on 15001).
//!
//! Each call opens its own connection, as the clients in Istio's apps do, so a timeout
//! or retry never reuses a connection a slow upstream still holds.

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderName, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Headers Bookinfo's services copy from the request they serve to the requests they make,
/// so a trace (and the user's session) spans every hop. Reviews also forwards `end-user`;
/// productpage sets it from the login instead.
pub const FORWARDED_HEADERS: [&str; 17] = [
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
];

/// Larger answers than any Bookinfo service sends mean something else is answering.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The headers among `names` that `incoming` carries, every value of each.
pub fn forwarded(incoming: &HeaderMap, names: &[&'static str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in names {
        let name = HeaderName::from_static(name);
        for value in incoming.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Where a service is reached: a host name the system resolver knows (`details` inside a
/// mesh pod) or an IP address, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    host: String,
    port: u16,
}

impl Upstream {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Upstream {
            host: host.into(),
            port,
        }
    }
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Self {
        Upstream::new(addr.ip().to_string(), addr.port())
    }
}

/// The authority: `host:port`, with an IPv6 address in brackets.
impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How long one attempt may take (connect to last byte) and how many attempts to make.
#[derive(Clone, Copy, Debug)]
pub struct CallPolicy {
    pub timeout: Duration,
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("the HTTP exchange failed: {0}")]
    Http(hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(http::Error),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("cannot read the answer: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("the answer is not the expected JSON: {0}")]
    Decode(serde_json::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl CallError {
    /// The status to pass on to the caller, as Istio's productpage does: the upstream's
    /// own when it answered, else 500.
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::Status(status) => *status,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Makes calls directly, or through an explicit proxy: absolute-form requests
/// (`GET http://details:9080/details/0`) sent to the proxy, which resolves the host.
#[derive(Clone, Debug)]
pub struct Client {
    proxy: Option<SocketAddr>,
}

impl Client {
    pub fn new(proxy: Option<SocketAddr>) -> Self {
        Client { proxy }
    }

    /// `GET http://upstream/path`, which must answer 200 with JSON; any failure (refused,
    /// timed out, another status, a bad body) is retried while attempts remain.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        upstream: &Upstream,
        path: &str,
        headers: &HeaderMap,
        policy: CallPolicy,
    ) -> Result<T, CallError> {
        let mut attempt = 1;
        loop {
            let outcome =
                tokio::time::timeout(policy.timeout, self.get_once(upstream, path, headers))
                    .await
                    .unwrap_or(Err(CallError::Timeout(policy.timeout)));
            match outcome {
                Err(error) if attempt < policy.attempts => {
                    tracing::debug!(%upstream, path, attempt, %error, "retrying");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn get_once<T: DeserializeOwned>(
        &self,
        upstream: &Upstream,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<T, CallError> {
        let stream = match self.proxy {
            Some(proxy) => TcpStream::connect(proxy).await,
            None => TcpStream::connect((upstream.host.as_str(), upstream.port)).await,
        }
        .map_err(CallError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(CallError::Http)?;
        // Ends when the answer has been read and `sender` drops, or when a timeout drops
        // the pending answer: hyper then closes the connection.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "outbound connection ended");
            }
        });

        let authority = upstream.to_string();
        let uri = match self.proxy {
            Some(_) => format!("http://{authority}{path}"),
            None => path.to_owned(),
        };
        let mut request = Request::get(uri)
            .header(HOST, &authority)
            .body(Empty::<Bytes>::new())
            .map_err(CallError::Request)?;
        request.headers_mut().extend(headers.clone());

        let response = sender
            .send_request(request)
            .await
            .map_err(CallError::Http)?;
        if response.status() != StatusCode::OK {
            return Err(CallError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(CallError::Body)?
            .to_bytes();
        serde_json::from_slice(&body).map_err(CallError::Decode)
    }
}

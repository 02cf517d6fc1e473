//! One GET over a fresh HTTP/1.1 connection, bounded in time and size: the scraper's and
//! the external sources' (Prometheus, Jaeger, Zipkin) only call.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{0} is not an http:// address with a host and port")]
    Address(String),
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("answered {status}: {body}")]
    Status {
        status: http::StatusCode,
        body: String,
    },
    #[error("the answer is over {MAX_BODY} bytes")]
    Body,
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
}

/// GETs `path` (with its query) under `base` (`http://host:port`, optionally with a path
/// prefix).
pub async fn get(base: &http::Uri, path: &str) -> Result<Bytes, GetError> {
    tokio::time::timeout(TIMEOUT, get_inner(base, path))
        .await
        .map_err(|_| GetError::Timeout)?
}

async fn get_inner(base: &http::Uri, path: &str) -> Result<Bytes, GetError> {
    let address = || GetError::Address(base.to_string());
    if base.scheme_str() != Some("http") {
        return Err(address());
    }
    let authority = base.authority().ok_or_else(address)?;
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(GetError::Connect)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let prefix = base.path().trim_end_matches('/');
    let request = http::Request::get(format!("{prefix}{path}"))
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|_| address())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| GetError::Body)?
        .to_bytes();
    if !status.is_success() {
        let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(GetError::Status { status, body });
    }
    Ok(body)
}

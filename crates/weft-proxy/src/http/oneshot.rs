//! One request on a fresh connection, for the proxy's own calls (spans to a collector, the
//! app's metrics for 15020, a JWKS), never for the requests it proxies.

use crate::transport::tls::{Io, Origination};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use std::time::Duration;

/// Sends `request` to `host:port` (over `tls` when given) and reads the answer's body, up
/// to `limit` bytes, all within `timeout`.
pub async fn send(
    host: &str,
    port: u16,
    tls: Option<&Origination>,
    request: Request<Full<Bytes>>,
    limit: usize,
    timeout: Duration,
) -> Result<Response<Bytes>, String> {
    let call = async {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let io = match tls {
            Some(tls) => tls.connect(stream).await.map_err(|e| e.to_string())?.0,
            None => Io::Plain(stream),
        };
        let io = hyper_util::rt::TokioIo::new(io);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("{host}:{port} did not answer within {timeout:?}"))?
}

//! The request head as it enters the proxy, checked and normalised once before routing:
//! its size (Envoy's `max_request_headers_kb`), at most one `Host` (RFC 9112 §3.2), the
//! request target's authority over `Host`
//! (absolute-form, §3.2.2; `:authority` on HTTP/2), and the path normalised as Istio's
//! default does (`path.rs`). Routing and forwarding then read one consistent head.

use super::local_reply::LocalReply;
use super::path::{self, PathError};
use crate::telemetry::access_log::Flags;
use http::header::{HeaderValue, HOST};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri};
use std::borrow::Cow;

/// Envoy's `max_request_headers_kb` default: 60 KiB.
pub const MAX_REQUEST_HEADERS: usize = 60 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    #[error(
        "the request headers take {0} bytes, over Envoy's limit of 60 KiB (max_request_headers_kb)"
    )]
    HeadersTooLarge(usize),
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("the normalised request target {0:?} is not a valid URI")]
    Unrepresentable(String),
}

impl EdgeError {
    /// The answer Envoy gives, with its response code details.
    pub fn reply(&self) -> LocalReply {
        let (status, details, body) = match self {
            EdgeError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "http1.headers_too_large",
                "Request Header Fields Too Large",
            ),
            EdgeError::DuplicateHost => (StatusCode::BAD_REQUEST, "http.invalid_authority", ""),
            EdgeError::Path(_) | EdgeError::Unrepresentable(_) => {
                (StatusCode::BAD_REQUEST, "path_normalization_failed", "")
            }
        };
        LocalReply::new(status, Flags::default(), details, body).hint(self.to_string())
    }

    /// Envoy closes an HTTP/1 connection after a head its codec refused.
    pub fn closes_connection(&self) -> bool {
        matches!(self, EdgeError::HeadersTooLarge(_))
    }
}

/// Checks and normalises `parts` in place; allocates only when something changes.
pub fn prepare(parts: &mut Parts) -> Result<(), EdgeError> {
    let size = head_size(parts);
    if size > MAX_REQUEST_HEADERS {
        return Err(EdgeError::HeadersTooLarge(size));
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(EdgeError::DuplicateHost);
    }
    if parts.method == Method::CONNECT {
        // The target is the tunnel's authority; there is no path.
        return Ok(());
    }
    if let (Some(target), Some(host)) = (parts.uri.authority(), host) {
        if target.as_str().as_bytes() != host.as_bytes() {
            let value = HeaderValue::from_str(target.as_str())
                .map_err(|_| EdgeError::Unrepresentable(parts.uri.to_string()))?;
            parts.headers.insert(HOST, value);
        }
    }
    if let Some(normalised) = normalised_target(&parts.uri)? {
        parts.uri = normalised;
    }
    Ok(())
}

/// Header bytes as Envoy counts them: names and values, with the method and target as the
/// pseudo-headers they become.
fn head_size(parts: &Parts) -> usize {
    let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    parts
        .headers
        .iter()
        .fold(parts.method.as_str().len() + target, |n, (k, v)| {
            n + k.as_str().len() + v.len()
        })
}

/// `uri` with its path normalised, or `None` when it already is.
pub fn normalised_target(uri: &Uri) -> Result<Option<Uri>, EdgeError> {
    let Some(pq) = uri.path_and_query() else {
        return Ok(None);
    };
    // `OPTIONS *` names the server, not a resource.
    if pq.path() == "*" {
        return Ok(None);
    }
    let Cow::Owned(path) = path::normalize(pq.path())? else {
        return Ok(None);
    };
    let target = match pq.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let unrepresentable = |_| EdgeError::Unrepresentable(target.clone());
    let pq = PathAndQuery::try_from(target.as_str()).map_err(unrepresentable)?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| EdgeError::Unrepresentable(target.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn heads_over_60_kib_are_refused() {
        let value = "a".repeat(MAX_REQUEST_HEADERS);
        let mut p = parts(http::Request::get("/").header("x-big", value));
        assert!(matches!(
            prepare(&mut p),
            Err(EdgeError::HeadersTooLarge(_))
        ));
        let mut p = parts(http::Request::get("/").header("x-big", "a".repeat(60_000)));
        assert_eq!(prepare(&mut p), Ok(()));
    }

    #[test]
    fn two_hosts_are_refused() {
        let mut p = parts(
            http::Request::get("/")
                .header("host", "a")
                .header("host", "b"),
        );
        assert_eq!(prepare(&mut p), Err(EdgeError::DuplicateHost));
        assert_eq!(EdgeError::DuplicateHost.reply().status, 400);
    }

    #[test]
    fn the_target_authority_wins_over_host() {
        let mut p = parts(http::Request::get("http://reviews:9080/x").header("host", "other"));
        prepare(&mut p).unwrap();
        assert_eq!(p.headers["host"], "reviews:9080");
        assert_eq!(p.uri.path(), "/x");
    }

    #[test]
    fn the_path_is_normalised_and_the_query_kept() {
        let mut p = parts(http::Request::get("/a/../../etc/passwd?x=/../y"));
        prepare(&mut p).unwrap();
        assert_eq!(p.uri, "/etc/passwd?x=/../y");
        let mut p = parts(http::Request::get("/a%00"));
        assert!(matches!(prepare(&mut p), Err(EdgeError::Path(_))));
    }
}

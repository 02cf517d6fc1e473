//! Responses the proxy makes itself, in one place: Envoy's status, body and flags, plus an
//! `x-weft-error` header with a hint for a human. gRPC callers get a trailers-only reply
//! with the matching `grpc-status`, as Envoy sends.

use super::body::ResponseBody;
use crate::telemetry::access_log::Flags;
use http::{HeaderValue, Response, StatusCode};
use std::borrow::Cow;

#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: StatusCode,
    pub flags: Flags,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`.
    pub details: Cow<'static, str>,
    pub body: String,
    pub hint: Option<String>,
    /// Headers to answer with besides the hint: an external authorizer's denial's.
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl LocalReply {
    pub fn new(
        status: StatusCode,
        flags: Flags,
        details: impl Into<Cow<'static, str>>,
        body: impl Into<String>,
    ) -> LocalReply {
        LocalReply {
            status,
            flags,
            details: details.into(),
            body: body.into(),
            hint: None,
            headers: Vec::new(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> LocalReply {
        self.hint = Some(hint.into());
        self
    }

    pub fn no_route() -> LocalReply {
        LocalReply::new(StatusCode::NOT_FOUND, Flags::NR, "route_not_found", "")
    }

    pub fn no_healthy_upstream(cluster: &str) -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flags::UH,
            "no_healthy_upstream",
            "no healthy upstream",
        )
        .hint(format!("{cluster} has no endpoint that is not ejected"))
    }

    pub fn overflow(cluster: &str) -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flags::UO,
            "upstream_reset_before_response_started{overflow}",
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        )
        .hint(format!("{cluster}: connectionPool limits reached (DestinationRule trafficPolicy.connectionPool)"))
    }

    pub fn connect_failure(detail: String) -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flags::UF,
            "upstream_reset_before_response_started{connection_failure}",
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        )
        .hint(detail)
    }

    pub fn reset(detail: String) -> LocalReply {
        LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Flags::UC,
            "upstream_reset_before_response_started{connection_termination}",
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        )
        .hint(detail)
    }

    pub fn timeout() -> LocalReply {
        LocalReply::new(
            StatusCode::GATEWAY_TIMEOUT,
            Flags::UT,
            "response_timeout",
            "upstream request timeout",
        )
    }

    pub fn into_response(self, grpc: bool) -> Response<ResponseBody> {
        let mut builder = Response::builder();
        if let Some(hint) = self
            .hint
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok())
        {
            builder = builder.header("x-weft-error", hint);
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        if grpc {
            let message: &str = if self.body.is_empty() {
                &self.details
            } else {
                &self.body
            };
            return builder
                .status(StatusCode::OK)
                .header("content-type", "application/grpc")
                .header("grpc-status", grpc_status_for(self.status).to_string())
                .header(
                    "grpc-message",
                    HeaderValue::from_str(message).unwrap_or(HeaderValue::from_static("")),
                )
                .body(ResponseBody::empty())
                .expect("valid local reply");
        }
        let body = self.body;
        let typed = builder
            .headers_ref()
            .is_some_and(|h| h.contains_key(http::header::CONTENT_TYPE));
        if !body.is_empty() && !typed {
            builder = builder.header("content-type", "text/plain");
        }
        builder
            .status(self.status)
            .header("content-length", body.len())
            .body(ResponseBody::full(body))
            .expect("valid local reply")
    }
}

/// Envoy's HTTP-to-gRPC status mapping for local replies.
pub fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

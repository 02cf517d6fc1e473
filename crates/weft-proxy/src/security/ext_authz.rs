//! CUSTOM AuthorizationPolicy's external authorizer, as Envoy's HTTP `ext_authz` filter
//! calls MeshConfig's `envoyExtAuthzHttp` provider: the request's method and path (after
//! `pathPrefix`), Host, Authorization and the headers `includeRequestHeadersInCheck` names,
//! with no body, sent to the provider's service through its cluster (mTLS to a sidecar, as
//! for any mesh call). A 200 allows, copying `headersToUpstreamOnAllow` onto the request and
//! `headersToDownstreamOnAllow` onto its response; a 5xx or no answer is `statusOnError`
//! (403) unless `failOpen`; any other answer is the caller's response
//! (`headersToDownstreamOnDeny` with Location and WWW-Authenticate, else all its headers).
//! Header lists take Istio's exact, `prefix*` and `*suffix` names.

use crate::http::body::RequestBody;
use crate::http::local_reply::LocalReply;
use crate::telemetry::access_log::Flags;
use crate::transport::tls::{Alpn, MeshTls};
use crate::upstream::Cluster;
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::sync::Arc;
use std::time::Duration;
use weft_api::types::mesh_config::ExtAuthzHttpProvider;

/// Istio's default `timeout` for an authorizer.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How much of a denial's body is passed on.
const MAX_DENIAL_BODY: usize = 64 * 1024;

/// What a CUSTOM policy's `provider.name` resolved to.
#[derive(Debug, Clone)]
pub enum Provider {
    Http(Arc<ExtAuthzHttp>),
    /// Named but not callable (missing, gRPC, not an authorizer): requests it would
    /// check are denied, saying why.
    Unusable(String),
}

#[derive(Debug)]
pub struct ExtAuthzHttp {
    pub name: String,
    cluster: Arc<Cluster>,
    path_prefix: String,
    timeout: Duration,
    fail_open: bool,
    status_on_error: StatusCode,
    include: Vec<HeaderPattern>,
    additional: Vec<(HeaderName, HeaderValue)>,
    to_upstream: Vec<HeaderPattern>,
    to_downstream_on_allow: Vec<HeaderPattern>,
    to_downstream_on_deny: Vec<HeaderPattern>,
}

/// A header name as Istio's provider lists take it: exact, `prefix*` or `*suffix`.
#[derive(Debug)]
enum HeaderPattern {
    Exact(HeaderName),
    Prefix(String),
    Suffix(String),
}

impl HeaderPattern {
    fn parse(name: &str) -> Option<HeaderPattern> {
        let name = name.to_ascii_lowercase();
        if let Some(suffix) = name.strip_prefix('*') {
            Some(HeaderPattern::Suffix(suffix.to_string()))
        } else if let Some(prefix) = name.strip_suffix('*') {
            Some(HeaderPattern::Prefix(prefix.to_string()))
        } else {
            HeaderName::try_from(name).ok().map(HeaderPattern::Exact)
        }
    }

    fn matches(&self, name: &HeaderName) -> bool {
        match self {
            HeaderPattern::Exact(exact) => exact == name,
            HeaderPattern::Prefix(prefix) => name.as_str().starts_with(prefix.as_str()),
            HeaderPattern::Suffix(suffix) => name.as_str().ends_with(suffix.as_str()),
        }
    }
}

fn patterns(names: &[String]) -> Vec<HeaderPattern> {
    names
        .iter()
        .filter_map(|n| HeaderPattern::parse(n))
        .collect()
}

fn any_matches(patterns: &[HeaderPattern], name: &HeaderName) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// The headers of `from` that `patterns` name.
fn picked(from: &HeaderMap, patterns: &[HeaderPattern]) -> Vec<(HeaderName, HeaderValue)> {
    from.iter()
        .filter(|(n, _)| any_matches(patterns, n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// Headers that describe a message's framing, never copied between messages.
fn framing(name: &HeaderName) -> bool {
    matches!(
        *name,
        header::HOST | header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
    )
}

/// What the authorizer decided.
pub enum Decision {
    Allow {
        /// Set on the request before it goes on.
        upstream: Vec<(HeaderName, HeaderValue)>,
        /// Added to the response the caller gets.
        downstream: Vec<(HeaderName, HeaderValue)>,
    },
    Deny(LocalReply),
}

impl Provider {
    /// The provider `name` in MeshConfig, its service's cluster from `cluster(host, port)`.
    pub fn resolve(
        name: &str,
        mesh: Option<&weft_api::types::MeshConfig>,
        cluster: impl FnOnce(&str, u16) -> Arc<Cluster>,
    ) -> Provider {
        let Some(found) = mesh.and_then(|m| m.provider(name)) else {
            return Provider::Unusable(format!(
                "no MeshConfig extensionProviders entry is named {name:?}"
            ));
        };
        if found.envoy_ext_authz_grpc.is_some() {
            return Provider::Unusable(format!(
                "provider {name:?} is envoyExtAuthzGrpc, which Weft does not call; use envoyExtAuthzHttp"
            ));
        }
        let Some(http) = &found.envoy_ext_authz_http else {
            return Provider::Unusable(format!(
                "provider {name:?} is not an authorizer (envoyExtAuthzHttp)"
            ));
        };
        let Some(port) = http.port.number() else {
            return Provider::Unusable(format!("provider {name:?} has no port"));
        };
        // `ns/host` names the service's namespace; the host is already fully qualified.
        let host = http.service.rsplit('/').next().unwrap_or(&http.service);
        let cluster = cluster(host, port);
        // Known at compile time, so never subject to failOpen: as Istio denies all then.
        if let Some(why) = &cluster.config.unusable {
            return Provider::Unusable(format!("provider {name:?}: {why}"));
        }
        Provider::Http(Arc::new(ExtAuthzHttp::new(name, http, cluster)))
    }
}

impl ExtAuthzHttp {
    fn new(name: &str, p: &ExtAuthzHttpProvider, cluster: Arc<Cluster>) -> ExtAuthzHttp {
        let mut include = patterns(&p.include_request_headers_in_check);
        include.extend(patterns(&p.include_headers_in_check));
        ExtAuthzHttp {
            name: name.to_string(),
            cluster,
            path_prefix: p.path_prefix.clone().unwrap_or_default(),
            timeout: p.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
            fail_open: p.fail_open.unwrap_or(false),
            status_on_error: p
                .status_on_error
                .as_deref()
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::FORBIDDEN),
            include,
            additional: p
                .include_additional_headers_in_check
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::try_from(k.to_ascii_lowercase()).ok()?,
                        HeaderValue::try_from(v.as_str()).ok()?,
                    ))
                })
                .collect(),
            to_upstream: patterns(&p.headers_to_upstream_on_allow),
            to_downstream_on_allow: patterns(&p.headers_to_downstream_on_allow),
            to_downstream_on_deny: patterns(&p.headers_to_downstream_on_deny),
        }
    }

    /// Asks the authorizer about the request `parts` describe.
    pub async fn check(&self, mesh: Option<&MeshTls>, parts: &Parts) -> Decision {
        let answer = tokio::time::timeout(self.timeout, self.call(mesh, parts)).await;
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(why)) => return self.failed(why),
            Err(_) => return self.failed(format!("no answer within {:?}", self.timeout)),
        };
        let (head, body) = response;
        if head.status == StatusCode::OK {
            return Decision::Allow {
                upstream: picked(&head.headers, &self.to_upstream),
                downstream: picked(&head.headers, &self.to_downstream_on_allow),
            };
        }
        // Envoy counts an authorizer's own failure as an error, not as its decision.
        if head.status.is_server_error() {
            return self.failed(format!("it answered {}", head.status));
        }
        let mut reply = LocalReply::new(
            head.status,
            Flags::UAEX,
            "ext_authz_denied",
            String::from_utf8_lossy(&body).into_owned(),
        )
        .hint(format!("denied by the external authorizer {:?}", self.name));
        reply.headers = head
            .headers
            .iter()
            .filter(|(n, _)| {
                if self.to_downstream_on_deny.is_empty() {
                    !framing(n)
                } else {
                    // As Envoy adds them to any list: a denial may be a redirect to log in.
                    matches!(*n, &header::LOCATION | &header::WWW_AUTHENTICATE)
                        || any_matches(&self.to_downstream_on_deny, n)
                }
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Decision::Deny(reply)
    }

    fn failed(&self, why: String) -> Decision {
        if self.fail_open {
            tracing::debug!(provider = %self.name, "external authorizer failed, failOpen lets the request through: {why}");
            return Decision::Allow {
                upstream: Vec::new(),
                downstream: Vec::new(),
            };
        }
        Decision::Deny(
            LocalReply::new(self.status_on_error, Flags::UAEX, "ext_authz_error", "").hint(
                format!("the external authorizer {:?} failed: {why}", self.name),
            ),
        )
    }

    async fn call(
        &self,
        mesh: Option<&MeshTls>,
        parts: &Parts,
    ) -> Result<(http::response::Parts, bytes::Bytes), String> {
        let cluster = &self.cluster;
        if let Some(why) = &cluster.config.unusable {
            return Err(why.clone());
        }
        let endpoint = cluster
            .pick(None, &[], None)
            .ok_or_else(|| format!("{} has no endpoint", cluster.config.name))?;
        let tls = cluster.origination(mesh, &endpoint, Alpn::Http1)?;
        let path = format!(
            "{}{}",
            self.path_prefix,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut check = Request::builder()
            .method(parts.method.clone())
            .uri(path)
            .body(())
            .map_err(|e| format!("cannot form the check request: {e}"))?;
        let headers = check.headers_mut();
        // Envoy always sends Host and Authorization, and whatever the provider names.
        for (name, value) in &parts.headers {
            let always = matches!(*name, header::HOST | header::AUTHORIZATION);
            if always || (!framing(name) && any_matches(&self.include, name)) {
                headers.append(name.clone(), value.clone());
            }
        }
        if !headers.contains_key(header::HOST) {
            if let Some(authority) = parts.uri.authority() {
                if let Ok(host) = HeaderValue::try_from(authority.as_str()) {
                    headers.insert(header::HOST, host);
                }
            }
        }
        for (name, value) in &self.additional {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let (check_parts, ()) = check.into_parts();
        let sent = cluster
            .upstream
            .send(
                false,
                &endpoint,
                tls.as_deref(),
                &check_parts,
                RequestBody::empty(),
                None,
            )
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (head, body) = sent.response.into_parts();
        let body = Limited::new(body, MAX_DENIAL_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((head, body))
    }
}

//! CUSTOM AuthorizationPolicy's external authorizer, as Envoy's HTTP `ext_authz` filter
//! calls MeshConfig's `envoyExtAuthzHttp` provider: the request's method and path (after
//! `pathPrefix`), Host and the headers `includeRequestHeadersInCheck` names, with no body,
//! sent to the provider's service through its cluster (mTLS to a sidecar, as for any mesh
//! call). A 200 allows, copying `headersToUpstreamOnAllow` onto the request; any other
//! answer is the caller's response (`headersToDownstreamOnDeny`, else all its headers); no
//! answer is `statusOnError` (403) unless `failOpen`.

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
    include: Vec<HeaderName>,
    additional: Vec<(HeaderName, HeaderValue)>,
    to_upstream: Vec<HeaderName>,
    to_downstream_on_deny: Vec<HeaderName>,
}

/// What the authorizer decided.
pub enum Decision {
    /// Headers to set on the request before it goes on.
    Allow(Vec<(HeaderName, HeaderValue)>),
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

fn header_names(names: &[String]) -> Vec<HeaderName> {
    names
        .iter()
        .filter_map(|n| HeaderName::try_from(n.to_ascii_lowercase()).ok())
        .collect()
}

impl ExtAuthzHttp {
    fn new(name: &str, p: &ExtAuthzHttpProvider, cluster: Arc<Cluster>) -> ExtAuthzHttp {
        let mut include = header_names(&p.include_request_headers_in_check);
        include.extend(header_names(&p.include_headers_in_check));
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
            to_upstream: header_names(&p.headers_to_upstream_on_allow),
            to_downstream_on_deny: header_names(&p.headers_to_downstream_on_deny),
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
            let set = self
                .to_upstream
                .iter()
                .filter_map(|n| head.headers.get(n).map(|v| (n.clone(), v.clone())))
                .collect();
            return Decision::Allow(set);
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
                    !matches!(
                        *n,
                        &header::HOST
                            | &header::CONTENT_LENGTH
                            | &header::TRANSFER_ENCODING
                            | &header::CONNECTION
                    )
                } else {
                    self.to_downstream_on_deny.contains(n)
                }
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Decision::Deny(reply)
    }

    fn failed(&self, why: String) -> Decision {
        if self.fail_open {
            tracing::debug!(provider = %self.name, "external authorizer failed, failOpen lets the request through: {why}");
            return Decision::Allow(Vec::new());
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
        copy(&parts.headers, headers, &[header::HOST]);
        if !headers.contains_key(header::HOST) {
            if let Some(authority) = parts.uri.authority() {
                if let Ok(host) = HeaderValue::try_from(authority.as_str()) {
                    headers.insert(header::HOST, host);
                }
            }
        }
        copy(&parts.headers, headers, &self.include);
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

fn copy(from: &HeaderMap, to: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        for value in from.get_all(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

//! Sending a request to a cluster: admission against the circuit breakers, endpoint choice,
//! retries on Istio's conditions with another endpoint where one exists, per-try and route
//! timeouts, and outlier-detection bookkeeping.

use super::body::{Buffered, RequestBody, ResponseBody};
use super::headers::{strip_hop_by_hop, X_ENVOY_UPSTREAM_SERVICE_TIME};
use super::local_reply::LocalReply;
use crate::model::route::RetryPolicy;
use crate::telemetry::access_log::Flags;
use crate::transport::tls::{Alpn, MeshTls};
use crate::upstream::client::{SendError, Sent};
use crate::upstream::endpoint::{ActiveGuard, Outcome};
use crate::upstream::stats::ClusterStats;
use crate::upstream::{Cluster, Endpoint};
use http::{request::Parts, HeaderValue, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, timeout_at, Instant};

/// What the access log learns from forwarding.
#[derive(Debug, Default)]
pub struct Forwarded {
    pub flags: Flags,
    pub details: std::borrow::Cow<'static, str>,
    pub upstream_host: Option<String>,
    pub service_time: Option<Duration>,
    /// When each retry was sent, for the request's span.
    pub retries: Vec<std::time::SystemTime>,
    /// The answering server's SPIFFE ID, when the hop was mTLS.
    pub upstream_peer: Option<Arc<str>>,
    /// Why the last try's TLS handshake failed.
    pub transport_failure: Option<String>,
}

pub struct Call<'a> {
    pub cluster: &'a Arc<Cluster>,
    /// The request as it goes upstream, minus URI authority and body.
    pub parts: &'a Parts,
    pub body: Buffered,
    pub retry: &'a RetryPolicy,
    pub timeout: Option<Duration>,
    pub per_try_timeout: Option<Duration>,
    pub hash: Option<u64>,
    pub original_dst: Option<SocketAddr>,
    pub downstream_h2: bool,
    /// Send `x-envoy-attempt-count` on each try, as Istio configures outbound and gateway
    /// routes (`include_request_attempt_count`); the inbound hop does not.
    pub attempt_count: bool,
    /// This proxy's mTLS, for endpoints that take it.
    pub mesh_tls: Option<&'a MeshTls>,
}

enum TryError {
    Send(SendError),
    PerTryTimeout,
}

pub async fn forward(
    call: Call<'_>,
    out: &mut Forwarded,
) -> Result<Response<ResponseBody>, LocalReply> {
    let cluster = call.cluster;
    if let Some(why) = &cluster.config.unusable {
        return Err(LocalReply::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            Flags::NC,
            "cluster_not_found",
            "no healthy upstream",
        )
        .hint(why.clone()));
    }
    let h2 = cluster.speaks_h2(call.downstream_h2);
    let started = Instant::now();
    let deadline = call.timeout.map(|t| started + t);
    let admission = cluster
        .admit(h2)
        .await
        .map_err(|_| LocalReply::overflow(&cluster.config.name))?;
    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    let (mut streaming, replayable) = match call.body {
        Buffered::Streaming(body) => (Some(body), None),
        buffered => (None, Some(buffered)),
    };
    let mut retry_tokens = Vec::new();
    let mut attempt = 0u32;
    loop {
        let endpoint = cluster
            .pick(
                call.hash,
                if call.retry.retry_other_hosts.unwrap_or(call.hash.is_none()) {
                    &tried
                } else {
                    &[]
                },
                call.original_dst,
            )
            .ok_or_else(|| LocalReply::no_healthy_upstream(&cluster.config.name))?;
        out.upstream_host = Some(endpoint.authority.clone());
        let Some(body) = streaming
            .take()
            .or_else(|| replayable.as_ref().and_then(Buffered::replay))
        else {
            break Err(LocalReply::reset(
                "the request body was streamed and cannot be sent again".into(),
            ));
        };
        let active = ActiveGuard::new(endpoint.clone());
        let try_deadline = match (call.per_try_timeout, deadline) {
            (Some(p), Some(d)) => Some(d.min(Instant::now() + p)),
            (Some(p), None) => Some(Instant::now() + p),
            (None, d) => d,
        };
        let attempt_count = call.attempt_count.then_some(attempt + 1);
        ClusterStats::count(&cluster.stats.rq_total);
        let alpn = if h2 { Alpn::Http2 } else { Alpn::Http1 };
        let tls = cluster.origination(call.mesh_tls, &endpoint, alpn);
        let sent = async {
            let tls = tls.map_err(SendError::Connect)?;
            cluster
                .upstream
                .send(
                    h2,
                    &endpoint,
                    tls.as_deref(),
                    call.parts,
                    body,
                    attempt_count,
                )
                .await
        };
        let result = match try_deadline {
            Some(d) => match timeout_at(d, sent).await {
                Ok(r) => r.map_err(TryError::Send),
                Err(_) if deadline.is_some_and(|dl| Instant::now() >= dl) => {
                    cluster.record(&endpoint, Outcome::LocalFailure);
                    out.flags |= Flags::UT;
                    ClusterStats::count(&cluster.stats.rq_timeout);
                    break Err(LocalReply::timeout());
                }
                Err(_) => Err(TryError::PerTryTimeout),
            },
            None => sent.await.map_err(TryError::Send),
        };
        let (retriable, answer) = match result {
            Ok(Sent { response, peer }) => {
                out.upstream_peer = peer;
                let status = response.status();
                cluster.record(&endpoint, Outcome::Status(status.as_u16()));
                let retriable =
                    call.retry.on.status(status) || call.retry.on.grpc_status(response.headers());
                (retriable, Ok(response))
            }
            Err(error) => {
                cluster.record(&endpoint, Outcome::LocalFailure);
                if let TryError::Send(SendError::Tls(reason)) = &error {
                    out.transport_failure = Some(reason.clone());
                }
                let (retriable, reply) = failure(error, call.retry, cluster, &endpoint);
                (retriable, Err(reply))
            }
        };
        if retriable && attempt < call.retry.attempts && replayable.is_some() {
            if let Some(token) = cluster.retry_token() {
                retry_tokens.push(token);
                tried.push(endpoint);
                attempt += 1;
                backoff(call.retry, attempt, deadline).await;
                ClusterStats::count(&cluster.stats.rq_retry);
                out.retries.push(std::time::SystemTime::now());
                continue;
            }
        }
        if retriable && call.retry.attempts > 0 && attempt == call.retry.attempts {
            out.flags |= Flags::URX;
        }
        break answer.map(|response| {
            out.service_time = Some(started.elapsed());
            let status = response.status();
            let mut response = response.map(ResponseBody::upstream);
            strip_hop_by_hop(
                response.headers_mut(),
                status == http::StatusCode::SWITCHING_PROTOCOLS,
            );
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            response
                .headers_mut()
                .insert(X_ENVOY_UPSTREAM_SERVICE_TIME, HeaderValue::from(ms));
            response.body_mut().hold((admission, active));
            if let Some(at) = deadline {
                response.body_mut().deadline(at);
            }
            response
        });
    }
}

/// Whether a failed try may be retried under `policy`, and the reply if it is the last.
fn failure(
    error: TryError,
    policy: &RetryPolicy,
    cluster: &Cluster,
    endpoint: &Endpoint,
) -> (bool, LocalReply) {
    let on = &policy.on;
    match error {
        TryError::Send(SendError::Connect(detail) | SendError::Tls(detail)) => (
            on.connect_failure || on.reset_or_timeout(),
            LocalReply::connect_failure(format!(
                "{detail} connecting to {} at {} ({}): is the workload running?",
                cluster.config.service, endpoint.authority, endpoint.declared_by
            )),
        ),
        TryError::Send(SendError::Reset(detail)) => (
            on.reset || on.five_xx || on.refused_stream,
            LocalReply::reset(format!(
                "{} at {}: {detail}",
                cluster.config.service, endpoint.authority
            )),
        ),
        TryError::PerTryTimeout => (on.reset_or_timeout(), LocalReply::timeout()),
    }
}

/// Envoy's retry back-off: exponential from the base with full jitter, capped at ten times
/// the base, never past the route deadline.
async fn backoff(policy: &RetryPolicy, attempt: u32, deadline: Option<Instant>) {
    let cap = policy.backoff_base * 10;
    let ceiling = (policy.backoff_base * 2u32.saturating_pow(attempt - 1)).min(cap);
    let wait = ceiling.mul_f64(fastrand::f64());
    let until = Instant::now() + wait;
    sleep(
        deadline
            .map_or(until, |d| d.min(until))
            .saturating_duration_since(Instant::now()),
    )
    .await;
}

/// Fires a copy of a replayable request at the mirror cluster; its answer is dropped.
pub fn mirror(
    cluster: Arc<Cluster>,
    mut parts: Parts,
    body: RequestBody,
    downstream_h2: bool,
    mesh_tls: Option<Arc<MeshTls>>,
) {
    // Envoy marks shadowed requests by suffixing the host with -shadow.
    if let Some(host) = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        let shadow = match host.rsplit_once(':') {
            Some((h, p)) => format!("{h}-shadow:{p}"),
            None => format!("{host}-shadow"),
        };
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            parts.headers.insert(http::header::HOST, v);
        }
    }
    tokio::spawn(async move {
        let h2 = cluster.speaks_h2(downstream_h2);
        let Some(endpoint) = cluster.pick(None, &[], None) else {
            return;
        };
        let alpn = if h2 { Alpn::Http2 } else { Alpn::Http1 };
        let Ok(tls) = cluster.origination(mesh_tls.as_deref(), &endpoint, alpn) else {
            return;
        };
        if let Ok(sent) = cluster
            .upstream
            .send(h2, &endpoint, tls.as_deref(), &parts, body, None)
            .await
        {
            let _ = http_body_util::BodyExt::collect(sent.response.into_body()).await;
        }
    });
}

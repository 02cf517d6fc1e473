//! One request through the proxy. Outbound: find the virtual host by Host (or the original
//! destination), the first matching route, then apply CORS, faults, redirects, direct
//! responses or forward with retries. Gateway: the same, from the listener port's gateway
//! route table. Inbound: hand the request to the local workload.

use super::body::{Buffered, End, MessageCount, RequestBody, ResponseBody};
use super::edge;
use super::forward::{self, Call, Forwarded};
use super::headers::{
    ensure_request_id, is_grpc, is_upgrade, strip_hop_by_hop, X_ENVOY_ORIGINAL_PATH,
    X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS, X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS, X_FORWARDED_FOR,
    X_FORWARDED_PROTO, X_REQUEST_ID,
};
use super::local_reply::LocalReply;
use super::tunnel;
use crate::model::matcher::{query_value, RequestView};
use crate::model::route::{roll, Action, Cors, FaultAbort, RetryPolicy, Route, RouteId};
use crate::model::{Snapshot, VirtualHost};
use crate::security::authz::{Denied, HttpSubject, Subject};
use crate::security::ext_authz::{Decision, Provider};
use crate::security::jwt::Verified;
use crate::telemetry::access_log::{Entry, Flags};
use crate::telemetry::peer;
use crate::telemetry::trace::span::SpanKind;
use crate::telemetry::trace::ActiveSpan;
use crate::upstream::config::{HashKey, LbPolicy};
use crate::upstream::lb::hash_key;
use crate::upstream::{Cluster, ClusterConfig};
use crate::Shared;
use http::header::{self, HeaderName, HeaderValue};
use http::{request::Parts, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use weft_api::types::OutboundTrafficMode;

use crate::transport::conn::{ConnInfo, Direction};
use crate::transport::tls::MeshTls;

/// One request's state as it goes through the steps (route → fault → forward → respond →
/// record): what its access-log line and metrics will say, what forwarding found, its span.
struct Exchange<'s> {
    /// This proxy's mTLS, for upstream endpoints that take it.
    mesh_tls: Option<&'s Arc<MeshTls>>,
    entry: Entry,
    forwarded: Forwarded,
    span: Option<ActiveSpan>,
    /// gRPC messages the caller sent (gRPC requests only).
    request_messages: Option<MessageCount>,
    /// The caller's side of an upgrade (WebSocket), spliced once the upstream answers 101.
    upgrade: Option<OnUpgrade>,
    /// The route that answered, for the route metrics.
    route: Option<Arc<RouteId>>,
}

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    let edge = edge::prepare(&mut parts);
    let entry = Entry {
        start: Some(SystemTime::now()),
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".into(), |p| p.to_string()),
        protocol: protocol_name(parts.version),
        forwarded_for: header_string(&parts, X_FORWARDED_FOR),
        user_agent: header_string(&parts, header::USER_AGENT),
        authority: Some(authority(&parts).to_string()),
        downstream_local: Some(conn.original_dst.unwrap_or(conn.local)),
        downstream_remote: Some(conn.remote),
        downstream_mtls: conn.mtls.is_some(),
        downstream_peer_principal: conn.mtls.as_ref().and_then(|m| m.principal.clone()),
        requested_server_name: conn.requested_server_name.clone(),
        bytes_received: body_hint(&body),
        ..Default::default()
    };
    let grpc = is_grpc(&parts.headers);
    ensure_request_id(&mut parts.headers);
    let snapshot = shared.config.current();
    let inbound = conn.direction == Direction::Inbound;
    let mut x = Exchange {
        mesh_tls: shared.tls.as_ref(),
        entry,
        forwarded: Forwarded::default(),
        span: shared.tracer.begin(
            snapshot.telemetry.tracing.as_ref(),
            if inbound {
                SpanKind::Server
            } else {
                SpanKind::Client
            },
            &mut parts.headers,
        ),
        request_messages: grpc.then(MessageCount::default),
        upgrade: None,
        route: None,
    };
    x.entry.request_id = header_string(&parts, X_REQUEST_ID);
    let mut close = false;
    // The caller's sidecar names its workload on inbound; outbound, this proxy names its own
    // to the next sidecar (taken off again where the request leaves the mesh).
    let caller = if inbound {
        peer::take(&mut parts.headers)
    } else {
        None
    };
    if snapshot.telemetry.keep_request_headers {
        x.entry.request_headers = Some(Arc::new(parts.headers.clone()));
    }
    if !inbound {
        shared.own_metadata.add(&mut parts.headers);
    }
    let mut authorizer_headers = Vec::new();
    let result = if let Err(e) = edge {
        close = e.closes_connection() && parts.version != Version::HTTP_2;
        Err(e.reply())
    } else {
        match authorize(&shared, &snapshot, &conn, &mut parts, &mut x.entry).await {
            Err(denied) => Err(denied),
            Ok(headers) => {
                authorizer_headers = headers;
                Ok(())
            }
        }
    };
    let result = match result {
        Err(reply) => Err(reply),
        Ok(()) => match conn.direction {
            Direction::Gateway => gateway(&snapshot, &conn, parts, body, &mut x).await,
            _ if parts.method == Method::CONNECT => {
                let mesh = shared.tls.as_deref();
                tunnel::connect(&snapshot, &shared.metrics, mesh, &conn, &parts, body).await
            }
            Direction::Outbound => outbound(&shared, &snapshot, &conn, parts, body, &mut x).await,
            Direction::Inbound => {
                if let Some(span) = &mut x.span {
                    span.name_with(|| inbound_operation(&snapshot, &conn, shared.inbound_target));
                }
                to_workload(&shared, &conn, parts, body, &mut x).await
            }
        },
    };
    let Exchange {
        mesh_tls: _,
        mut entry,
        mut forwarded,
        mut span,
        request_messages,
        upgrade,
        route,
    } = x;
    let mut response = match result {
        Ok(r) => r,
        Err(reply) => {
            forwarded.flags |= reply.flags;
            if forwarded.details.is_empty() {
                forwarded.details = reply.details.clone();
            }
            reply.into_response(grpc)
        }
    };
    for (name, value) in authorizer_headers {
        response.headers_mut().append(name, value);
    }
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(names) = snapshot.server.as_ref().unwrap_or(&shared.server) {
        let name = match conn.direction {
            Direction::Outbound => &names.outbound,
            Direction::Inbound | Direction::Gateway => &names.inbound_and_gateway,
        };
        response.headers_mut().insert(header::SERVER, name.clone());
    }
    entry.status = response.status().as_u16();
    entry.flags = forwarded.flags;
    entry.details = if forwarded.details.is_empty() {
        "via_upstream".into()
    } else {
        forwarded.details
    };
    entry.upstream_host = forwarded.upstream_host;
    entry.upstream_peer_principal = forwarded.upstream_peer;
    entry.upstream_transport_failure_reason = forwarded.transport_failure;
    entry.upstream_service_time_ms = forwarded.service_time.map(|d| d.as_millis() as u64);
    if let Some(span) = &mut span {
        for at in forwarded.retries {
            span.annotate_at(at, "retry");
        }
    }
    if inbound {
        // Istio names the hop to the local workload by its port: `inbound|9080||`.
        if let Some(to) = conn.original_dst.or(shared.inbound_target) {
            entry.upstream_cluster =
                Some(ClusterConfig::istio_name("inbound", to.port(), None, ""));
        }
    }
    // Inbound answers a caller's sidecar with this workload's metadata; outbound takes the
    // answering sidecar's off before the app sees the response.
    let peer = if inbound {
        if caller.is_some() {
            shared.own_metadata.add(response.headers_mut());
        }
        caller
    } else {
        peer::take(response.headers_mut())
    };
    if snapshot.telemetry.keep_response_headers {
        entry.response_headers = Some(Arc::new(response.headers().clone()));
    }
    let sample = shared
        .metrics
        .http(
            &snapshot,
            inbound,
            grpc,
            response.headers(),
            &entry,
            peer.as_ref(),
        )
        .for_route(route);
    if let Some(downstream) = upgrade {
        tunnel::splice_upgrade(downstream, &mut response, || {
            shared.metrics.tcp_opened(&snapshot, &entry, inbound)
        });
    }
    let log = snapshot.telemetry.log_for(inbound).clone();
    if grpc {
        response.body_mut().count_grpc_messages();
    }
    response.body_mut().on_end(move |ended| {
        entry.bytes_sent = ended.sent;
        entry.duration_ms = started.elapsed().as_millis() as u64;
        match ended.how {
            End::Complete => {}
            End::Incomplete => entry.flags |= Flags::DC,
            End::TimedOut => entry.flags |= Flags::UT,
        }
        let messages = request_messages.map(|sent| (sent.load(Ordering::Relaxed), ended.messages));
        sample.record(&entry, ended.grpc_status, messages);
        if let Some(span) = span {
            shared.tracer.finish(span, &entry);
        }
        if log.admits(&entry) {
            shared.access_log.emit_as(log.choice.as_ref(), entry);
        }
    });
    Ok(response)
}

/// The authorize step, for requests to this workload (inbound) or through this gateway:
/// its RequestAuthentications (a bad token is 401, as Envoy's jwt_authn answers), then its
/// AuthorizationPolicies (403, as Envoy's RBAC filter answers), noting in the entry what
/// AUDIT policies made of it. Allowed, it returns the headers an external authorizer adds
/// to the response.
async fn authorize(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    parts: &mut Parts,
    entry: &mut Entry,
) -> Result<Vec<(HeaderName, HeaderValue)>, LocalReply> {
    if conn.direction == Direction::Outbound {
        return Ok(Vec::new());
    }
    let verified = if snapshot.request_authn.is_empty() {
        None
    } else {
        snapshot
            .request_authn
            .authenticate(parts)
            .await
            .map_err(|rejected| {
                let mut reply = LocalReply::new(
                    StatusCode::UNAUTHORIZED,
                    Default::default(),
                    rejected.details(),
                    rejected.message,
                )
                .hint(rejected.hint);
                // As Envoy's jwt_authn answers (RFC 6750): the realm is the request's URL.
                let realm = format!(
                    "Bearer realm=\"{}://{}{}\", error=\"invalid_token\"",
                    scheme(conn),
                    authority(parts),
                    parts.uri.path()
                );
                if let Ok(value) = HeaderValue::try_from(realm) {
                    reply.headers.push((header::WWW_AUTHENTICATE, value));
                }
                reply
            })?
    };
    if snapshot.authz.is_empty() {
        return Ok(Vec::new());
    }
    let destination = match conn.direction {
        Direction::Inbound => conn
            .original_dst
            .or(shared.inbound_target)
            .unwrap_or(conn.local),
        _ => conn.local,
    };
    let rbac_denied = |denied: Denied| {
        LocalReply::new(
            StatusCode::FORBIDDEN,
            Default::default(),
            denied.details,
            "RBAC: access denied",
        )
        .hint(denied.hint)
    };
    // CUSTOM first: the external authorizer, whose allow may add headers the later
    // policies then see.
    let custom = match snapshot.authz.custom_provider(&http_subject(
        conn,
        destination,
        parts,
        verified.as_ref(),
    )) {
        None => None,
        Some(Err(denied)) => return Err(rbac_denied(denied)),
        Some(Ok(Provider::Unusable(why))) => {
            return Err(
                LocalReply::new(StatusCode::FORBIDDEN, Flags::UAEX, "ext_authz_error", "")
                    .hint(format!("a CUSTOM policy's provider cannot be asked: {why}")),
            )
        }
        Some(Ok(Provider::Http(p))) => Some(p.clone()),
    };
    let mut to_response = Vec::new();
    if let Some(provider) = custom {
        match provider.check(shared.tls.as_deref(), parts).await {
            Decision::Allow {
                upstream,
                downstream,
            } => {
                for (name, value) in upstream {
                    parts.headers.insert(name, value);
                }
                to_response = downstream;
            }
            Decision::Deny(reply) => return Err(reply),
        }
    }
    let subject = http_subject(conn, destination, parts, verified.as_ref());
    entry.access_log_hint = snapshot.authz.audited(&subject);
    snapshot.authz.check_rbac(&subject).map_err(rbac_denied)?;
    Ok(to_response)
}

/// A request as AuthorizationPolicy reads it.
fn http_subject<'a>(
    conn: &'a ConnInfo,
    destination: SocketAddr,
    parts: &'a Parts,
    auth: Option<&'a Verified>,
) -> Subject<'a> {
    let mut subject = Subject::connection(conn, destination);
    subject.http = Some(HttpSubject {
        method: parts.method.as_str(),
        host: authority(parts),
        path: parts.uri.path(),
        headers: &parts.headers,
        auth,
    });
    subject
}

/// The inbound span's name, as Istio's inbound listener decorates it: the service the
/// workload serves on the port, `reviews.default.svc.cluster.local:9080/*`.
fn inbound_operation(snapshot: &Snapshot, conn: &ConnInfo, target: Option<SocketAddr>) -> String {
    let port = conn.original_dst.or(target).map_or(0, |d| d.port());
    match snapshot.registry.serving(&snapshot.workload, port) {
        Some((host, service_port)) => format!("{host}:{service_port}/*"),
        None => format!("inbound|{port}||/*"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn outbound(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    parts: Parts,
    body: Incoming,
    x: &mut Exchange<'_>,
) -> Result<Response<ResponseBody>, LocalReply> {
    let authority = authority(&parts).to_ascii_lowercase();
    let port = conn
        .original_dst
        .map(|d| d.port())
        .or_else(|| authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .unwrap_or(80);
    let Some(vhost) = snapshot.virtual_host(port, &authority, conn.original_dst) else {
        return unknown_destination(shared, snapshot, conn, parts, body, &authority, port, x).await;
    };
    by_virtual_host(vhost, port, &authority, conn, parts, body, x).await
}

/// A request on a gateway port: a Host that no virtual host of the port's table names gets
/// 404 NR, as Envoy's gateway answers. The gateway is no forward proxy, so CONNECT too.
async fn gateway(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    parts: Parts,
    body: Incoming,
    x: &mut Exchange<'_>,
) -> Result<Response<ResponseBody>, LocalReply> {
    if parts.method == Method::CONNECT {
        return Err(LocalReply::no_route().hint("a gateway does not tunnel CONNECT"));
    }
    let authority = authority(&parts).to_ascii_lowercase();
    let port = conn.local.port();
    let Some(vhost) = snapshot
        .gateway_ports
        .get(&port)
        .and_then(|p| p.http_routes(conn.terminated_by.as_deref()))
        .and_then(|table| table.find(&authority))
    else {
        return Err(LocalReply::no_route().hint(format!(
            "no VirtualService bound to a Gateway server on port {port} has host {authority}"
        )));
    };
    if vhost.require_tls && conn.terminated_by.is_none() {
        return Ok(https_redirect(&authority, &parts));
    }
    by_virtual_host(vhost, port, &authority, conn, parts, body, x).await
}

/// The downstream's scheme, as Envoy sets `x-forwarded-proto` at the edge: https where a
/// Gateway server terminated TLS.
fn scheme(conn: &ConnInfo) -> &'static str {
    if conn.terminated_by.is_some() {
        "https"
    } else {
        "http"
    }
}

/// `tls.httpsRedirect`, as Envoy's `require_tls: ALL` answers: 301 to the same host and
/// path over https (a default `:80` dropped).
fn https_redirect(authority: &str, parts: &Parts) -> Response<ResponseBody> {
    let host = authority.strip_suffix(":80").unwrap_or(authority);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(location) = HeaderValue::try_from(format!("https://{host}{path}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The first route of `vhost` that matches, then CORS, faults, redirects, direct responses
/// or forwarding with retries.
#[allow(clippy::too_many_arguments)]
async fn by_virtual_host(
    vhost: &VirtualHost,
    port: u16,
    authority: &str,
    conn: &ConnInfo,
    mut parts: Parts,
    body: Incoming,
    x: &mut Exchange<'_>,
) -> Result<Response<ResponseBody>, LocalReply> {
    let view = RequestView::new(
        &parts.method,
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        parts.uri.scheme_str().unwrap_or(scheme(conn)),
        authority,
        &parts.headers,
        port,
    );
    let (path, query) = (view.path, view.query);
    let Some((route, matched)) = vhost.route_for(&view) else {
        return Err(LocalReply::no_route().hint(format!(
            "no http route of {} matches {} {}",
            vhost.name, parts.method, path
        )));
    };
    x.entry.route_name = route.name.clone();
    x.route = Some(route.id.clone());
    if let Some(span) = &mut x.span {
        span.name_with(|| format!("{}/*", vhost.name));
    }
    let origin = parts.headers.get(header::ORIGIN).cloned();
    if let (Some(cors), Some(origin)) = (&route.cors, &origin) {
        if let Some(preflight) = cors_preflight(cors, &parts, origin) {
            return Ok(preflight);
        }
    }
    let grpc = is_grpc(&parts.headers);
    if let Some(fault) = &route.fault {
        if let Some((delay, pct)) = fault.delay {
            if roll(pct) {
                x.forwarded.flags |= Flags::DI;
                if let Some(span) = &mut x.span {
                    span.annotate("fault.delay");
                }
                tokio::time::sleep(delay).await;
            }
        }
        if let Some((abort, pct)) = fault.abort {
            if roll(pct) {
                x.forwarded.flags |= Flags::FI;
                if let Some(span) = &mut x.span {
                    span.annotate("fault.abort");
                }
                x.forwarded.details = "fault_filter_abort".into();
                return Ok(fault_abort(abort, grpc));
            }
        }
    }
    let clusters = match &route.action {
        Action::Redirect(r) => {
            let location = r.location(
                view.scheme,
                self::authority(&parts),
                path,
                query,
                route.matched_prefix(matched),
            );
            x.forwarded.details = "direct_response".into();
            let location = HeaderValue::from_str(&location).map_err(|_| {
                LocalReply::new(
                    StatusCode::BAD_REQUEST,
                    Flags::default(),
                    "invalid_redirect",
                    "",
                )
                .hint(format!(
                    "the redirect target {location:?} is not a valid header"
                ))
            })?;
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = r.status;
            response.headers_mut().insert(header::LOCATION, location);
            return Ok(response);
        }
        Action::Direct { status, body } => {
            x.forwarded.details = "direct_response".into();
            let mut response = Response::new(ResponseBody::full(body.clone()));
            *response.status_mut() = *status;
            route.headers.response.apply(response.headers_mut());
            return Ok(response);
        }
        Action::Forward(clusters) => clusters,
    };
    let chosen = clusters.pick();
    x.entry.upstream_cluster = Some(chosen.cluster.config.name.clone());
    // Istio's route decorator: the destination's host and port.
    if let Some(span) = &mut x.span {
        let config = &chosen.cluster.config;
        span.name_with(|| format!("{}:{}/*", config.service, config.port));
    }
    if !chosen.cluster.config.mesh_internal {
        peer::strip(&mut parts.headers);
    }
    rewrite(route, &mut parts, route.matched_prefix(matched));
    route.headers.request.apply(&mut parts.headers);
    chosen.headers.request.apply(&mut parts.headers);
    if let Some(authority) = &chosen.authority {
        parts.headers.insert(header::HOST, authority.clone());
    }
    x.upgrade = take_upgrade(&mut parts);
    parts
        .headers
        .insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme(conn)));
    let (hash, set_cookie) = hash_for(&chosen.cluster.config.lb, &parts, conn);
    let timeout = header_ms(&parts, X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS).or(route.timeout);
    let per_try_timeout =
        header_ms(&parts, X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS).or(route.retry.per_try_timeout);
    let downstream_h2 = parts.version == Version::HTTP_2;
    let buffered = read_body(body, &parts, x.request_messages.clone()).await?;
    for m in &route.mirrors {
        if roll(m.percent) {
            if let Some(copy) = buffered.replay() {
                forward::mirror(
                    m.cluster.clone(),
                    clone_parts(&parts),
                    copy,
                    downstream_h2,
                    x.mesh_tls.cloned(),
                );
            }
        }
    }
    // An upgrade hands the connection over; it cannot be tried twice.
    let no_retry = RetryPolicy::none();
    let retry = if x.upgrade.is_some() {
        &no_retry
    } else {
        &route.retry
    };
    let call = Call {
        cluster: &chosen.cluster,
        parts: &parts,
        body: buffered,
        retry,
        timeout,
        per_try_timeout,
        hash,
        original_dst: conn.original_dst,
        downstream_h2,
        attempt_count: true,
        mesh_tls: x.mesh_tls.map(|t| &**t),
    };
    let mut response = forward::forward(call, &mut x.forwarded).await?;
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    route.headers.response.apply(response.headers_mut());
    chosen.headers.response.apply(response.headers_mut());
    if let (Some(cors), Some(origin)) = (&route.cors, origin) {
        cors_response_headers(cors, &origin, response.headers_mut());
    }
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
async fn unknown_destination(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    mut parts: Parts,
    body: Incoming,
    authority: &str,
    port: u16,
    x: &mut Exchange<'_>,
) -> Result<Response<ResponseBody>, LocalReply> {
    if snapshot.outbound_policy == OutboundTrafficMode::RegistryOnly {
        x.entry.upstream_cluster = Some("BlackHoleCluster".into());
        x.forwarded.details = "direct_response".into();
        let body = format!(
            "weft: {authority} (port {port}) is not a mesh service or ServiceEntry host, and outboundTrafficPolicy is REGISTRY_ONLY\n\
             hint: declare it with a ServiceEntry, or allow any destination with a Sidecar whose outboundTrafficPolicy.mode is ALLOW_ANY (or weft proxy --outbound-traffic-policy ALLOW_ANY)\n"
        );
        return Ok(Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header(header::CONTENT_TYPE, "text/plain")
            .header(
                "x-weft-error",
                "blocked by outboundTrafficPolicy REGISTRY_ONLY",
            )
            .body(ResponseBody::full(body))
            .expect("valid reply"));
    }
    x.entry.upstream_cluster = Some("PassthroughCluster".into());
    peer::strip(&mut parts.headers);
    let target = match conn.original_dst {
        Some(dst) => dst,
        None => {
            let with_port = if authority.contains(':') {
                authority.to_string()
            } else {
                format!("{authority}:{port}")
            };
            tokio::net::lookup_host(with_port)
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| LocalReply::connect_failure(format!("cannot resolve {authority}")))?
        }
    };
    pass_through(&shared.passthrough, target, true, parts, body, x).await
}

async fn to_workload(
    shared: &Shared,
    conn: &ConnInfo,
    parts: Parts,
    body: Incoming,
    x: &mut Exchange<'_>,
) -> Result<Response<ResponseBody>, LocalReply> {
    let target = conn.original_dst.or(shared.inbound_target).ok_or_else(|| {
        LocalReply::no_route()
            .hint("inbound connection without an original destination and no --inbound-target")
    })?;
    pass_through(&shared.inbound, target, false, parts, body, x).await
}

/// Sends a request to one address as it came (no route, no retry): PassthroughCluster and
/// the inbound hop to the local workload.
async fn pass_through(
    cluster: &Arc<Cluster>,
    target: SocketAddr,
    attempt_count: bool,
    mut parts: Parts,
    body: Incoming,
    x: &mut Exchange<'_>,
) -> Result<Response<ResponseBody>, LocalReply> {
    x.upgrade = take_upgrade(&mut parts);
    let messages = x.request_messages.clone();
    let call = Call {
        cluster,
        parts: &parts,
        body: Buffered::Streaming(RequestBody::streaming(body, messages)),
        retry: &RetryPolicy::none(),
        timeout: None,
        per_try_timeout: None,
        hash: None,
        original_dst: Some(target),
        downstream_h2: parts.version == Version::HTTP_2,
        attempt_count,
        // The local workload and PassthroughCluster have no sidecar to take mTLS.
        mesh_tls: None,
    };
    forward::forward(call, &mut x.forwarded).await
}

/// Strips hop-by-hop headers, keeping the upgrade pair (and taking the caller's side of
/// the upgrade) when the request asks for one.
fn take_upgrade(parts: &mut Parts) -> Option<OnUpgrade> {
    let upgrade = is_upgrade(&parts.headers)
        .then(|| parts.extensions.remove::<OnUpgrade>())
        .flatten();
    strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
    upgrade
}

async fn read_body(
    body: Incoming,
    parts: &Parts,
    messages: Option<MessageCount>,
) -> Result<Buffered, LocalReply> {
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Buffered::read(body, length, messages).await.map_err(|e| {
        LocalReply::new(
            StatusCode::BAD_REQUEST,
            Flags::DC,
            "downstream_remote_disconnect",
            "",
        )
        .hint(format!("reading the request body: {e}"))
    })
}

fn rewrite(route: &Route, parts: &mut Parts, matched_prefix: Option<&str>) {
    let Some(rw) = &route.rewrite else { return };
    let (path, query) = split_path(parts);
    if let Some(new_path) = rw.path(path, matched_prefix) {
        let pq = match query {
            Some(q) if !new_path.contains('?') => format!("{new_path}?{q}"),
            _ => new_path,
        };
        if let Ok(uri) = http::Uri::builder().path_and_query(pq).build() {
            parts.headers.insert(
                X_ENVOY_ORIGINAL_PATH,
                HeaderValue::from_str(path).unwrap_or(HeaderValue::from_static("/")),
            );
            parts.uri = uri;
        }
    }
}

fn fault_abort(abort: FaultAbort, grpc: bool) -> Response<ResponseBody> {
    let reply = match abort {
        FaultAbort::Http(status) => LocalReply::new(
            status,
            Flags::FI,
            "fault_filter_abort",
            "fault filter abort",
        ),
        FaultAbort::Grpc(code) => {
            return Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", code.to_string())
                .header("grpc-message", "fault filter abort")
                .body(ResponseBody::empty())
                .expect("valid fault reply");
        }
    };
    // An HTTP abort stays an HTTP status, even for gRPC callers, as Envoy's fault filter does.
    let _ = grpc;
    reply.into_response(false)
}

fn cors_preflight(
    cors: &Cors,
    parts: &Parts,
    origin: &HeaderValue,
) -> Option<Response<ResponseBody>> {
    let is_preflight = parts.method == Method::OPTIONS
        && parts
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let origin_str = origin.to_str().ok()?;
    if !is_preflight || !cors.allows(origin_str) {
        return None;
    }
    let mut response = Response::new(ResponseBody::empty());
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if let Some(v) = &cors.allow_methods {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
    }
    if let Some(v) = &cors.allow_headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
    if let Some(v) = &cors.max_age {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    Some(response)
}

fn cors_response_headers(cors: &Cors, origin: &HeaderValue, h: &mut http::HeaderMap) {
    if origin.to_str().is_ok_and(|o| cors.allows(o)) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if let Some(v) = &cors.expose_headers {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if cors.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// The consistent-hash key of a request, and the `Set-Cookie` to answer with when the
/// policy's cookie was missing and is generated.
fn hash_for(lb: &LbPolicy, parts: &Parts, conn: &ConnInfo) -> (Option<u64>, Option<HeaderValue>) {
    let LbPolicy::ConsistentHash(key) = lb else {
        return (None, None);
    };
    let hash = match key {
        HashKey::Header(name) => parts.headers.get(name).map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie(cookie) => {
            let value = cookie_value(&parts.headers, &cookie.name).filter(|v| !v.is_empty());
            return match (value, &cookie.generated_attributes) {
                (Some(v), _) => (Some(hash_key(v.as_bytes())), None),
                (None, Some(attributes)) => {
                    // Envoy's value: a hash of the connection's addresses, so requests
                    // racing on one connection get the same cookie.
                    let addresses = format!("{}{}", conn.remote, conn.local);
                    let value = format!("{:016x}", hash_key(addresses.as_bytes()));
                    let set_cookie = format!("{}=\"{value}\"{attributes}", cookie.name);
                    (
                        Some(hash_key(value.as_bytes())),
                        HeaderValue::from_str(&set_cookie).ok(),
                    )
                }
                (None, None) => (None, None),
            };
        }
        HashKey::SourceIp => Some(hash_key(conn.remote.ip().to_string().as_bytes())),
        HashKey::QueryParameter(name) => {
            query_value(parts.uri.query().unwrap_or(""), name).map(|v| hash_key(v.as_bytes()))
        }
    };
    (hash, None)
}

/// The value of cookie `name`, without the double quotes RFC 6265 allows around it.
fn cookie_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))?;
    Some(
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value),
    )
}

fn header_ms(parts: &Parts, name: HeaderName) -> Option<Duration> {
    let ms: u64 = parts.headers.get(name)?.to_str().ok()?.parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn header_string(parts: &Parts, name: HeaderName) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Host` first (HTTP/1.1, and what the proxy sets on HTTP/2 hops), then `:authority`.
fn authority(parts: &Parts) -> &str {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

fn split_path(parts: &Parts) -> (&str, Option<&str>) {
    (parts.uri.path(), parts.uri.query())
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn body_hint(body: &Incoming) -> u64 {
    http_body::Body::size_hint(body).exact().unwrap_or(0)
}

fn clone_parts(parts: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

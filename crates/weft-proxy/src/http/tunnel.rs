//! Byte streams inside HTTP: CONNECT (explicit-proxy TCP) and protocol upgrades
//! (WebSocket) spliced between caller and upstream.

use super::body::ResponseBody;
use super::local_reply::LocalReply;
use crate::model::Snapshot;
use crate::tcp::{self, L4Target};
use crate::telemetry::access_log::{Entry, Flags};
use crate::telemetry::metrics::{Metrics, TcpSample};
use crate::transport::conn::ConnInfo;
use crate::transport::splice::splice;
use crate::transport::tls::MeshTls;
use http::{request::Parts, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// `CONNECT host:port`: route as TCP to that service, answer 200, then splice, reporting
/// the tunnel in `istio_tcp_*`.
pub async fn connect(
    snapshot: &Snapshot,
    metrics: &Arc<Metrics>,
    mesh_tls: Option<&MeshTls>,
    conn: &ConnInfo,
    parts: &Parts,
    _body: Incoming,
) -> Result<Response<ResponseBody>, LocalReply> {
    let authority = parts.uri.authority().ok_or_else(|| {
        LocalReply::new(
            StatusCode::BAD_REQUEST,
            Flags::default(),
            "connect_without_authority",
            "CONNECT needs host:port",
        )
    })?;
    let port = authority.port_u16().unwrap_or(443);
    let target = tcp::route_tcp(
        snapshot,
        authority
            .host()
            .parse()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, port)),
        Some((authority.host(), port)),
    );
    if let L4Target::Blocked(why) = &target {
        return Err(LocalReply::new(
            StatusCode::BAD_GATEWAY,
            Flags::default(),
            "direct_response",
            "blocked by outboundTrafficPolicy REGISTRY_ONLY",
        )
        .hint(why.clone()));
    }
    let connected = tcp::connect(&target, None, mesh_tls)
        .await
        .map_err(|(_, why)| LocalReply::connect_failure(why))?;
    let (upstream, permit) = (connected.io, connected.permit);
    let entry = Entry {
        upstream_cluster: Some(target.cluster_name(conn.direction)),
        upstream_host: Some(connected.host),
        upstream_peer_principal: connected.peer,
        downstream_remote: Some(conn.remote),
        downstream_local: Some(conn.local),
        ..Default::default()
    };
    let sample = metrics.tcp_opened(snapshot, &entry, false);
    let on_upgrade = parts.extensions.get::<OnUpgrade>().cloned();
    let Some(on_upgrade) = on_upgrade else {
        return Err(LocalReply::new(
            StatusCode::BAD_REQUEST,
            Flags::default(),
            "upgrade_failed",
            "CONNECT is only supported over HTTP/1.1",
        ));
    };
    let remote = conn.remote;
    tokio::spawn(async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut upgraded = TokioIo::new(upgraded);
                let mut upstream = upstream;
                splice(&mut upgraded, &mut upstream, sample.every, |r, s| {
                    sample.bytes(r, s)
                })
                .await;
            }
            Err(e) => tracing::debug!(%remote, "CONNECT upgrade failed: {e}"),
        }
        sample.closed();
    });
    Ok(Response::new(ResponseBody::empty()))
}

/// After a 101 from upstream, splice the caller's upgraded connection to upstream's; the
/// bytes after the upgrade count in `istio_tcp_*` under the request's labels (`sample`).
pub fn splice_upgrade(
    downstream: OnUpgrade,
    response: &mut Response<ResponseBody>,
    sample: impl FnOnce() -> TcpSample,
) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let Some(upstream) = response.extensions_mut().remove::<OnUpgrade>() else {
        return;
    };
    let sample = sample();
    tokio::spawn(async move {
        if let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) {
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            splice(&mut down, &mut up, sample.every, |r, s| sample.bytes(r, s)).await;
        }
        sample.closed();
    });
}

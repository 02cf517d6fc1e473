//! Byte streams inside HTTP: CONNECT (explicit-proxy TCP) and protocol upgrades
//! (WebSocket) spliced between caller and upstream.

use super::body::ResponseBody;
use super::local_reply::LocalReply;
use super::outbound::ConnInfo;
use crate::model::Snapshot;
use crate::tcp::{self, L4Target};
use crate::telemetry::access_log::Flags;
use http::{request::Parts, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// `CONNECT host:port`: route as TCP to that service, answer 200, then splice.
pub async fn connect(
    snapshot: &Snapshot,
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
    let (upstream, _host, permit) = tcp::connect(&target, None)
        .await
        .map_err(|(_, why)| LocalReply::connect_failure(why))?;
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
                let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut upstream).await;
            }
            Err(e) => tracing::debug!(%remote, "CONNECT upgrade failed: {e}"),
        }
    });
    Ok(Response::new(ResponseBody::empty()))
}

/// After a 101 from upstream, splice the caller's upgraded connection to upstream's.
pub fn splice_upgrade(downstream: OnUpgrade, response: &mut Response<ResponseBody>) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let Some(upstream) = response.extensions_mut().remove::<OnUpgrade>() else {
        return;
    };
    tokio::spawn(async move {
        if let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) {
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up)).await;
        }
    });
}

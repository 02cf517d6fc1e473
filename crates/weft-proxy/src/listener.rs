//! Accepting connections on the capture ports and deciding, per connection, how to handle
//! it: by the destination port's declared protocol, else by sniffing; on a gateway port, by
//! what its Gateway servers declare.

use crate::http::handle;
use crate::model::protocol::Protocol;
use crate::model::route::WeightedClusters;
use crate::model::{GatewayPort, ServerTls, Serves, Snapshot};
use crate::security::authz::Subject;
use crate::tcp::{self, L4Target};
use crate::transport::conn::{ConnInfo, Direction};
use crate::transport::detect::{sniff, Detected, Prefixed};
use crate::transport::sni;
use crate::workers::Workers;
use crate::Shared;
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use weft_api::types::MtlsMode;

/// One builder for every connection: building one per connection allocated its timers anew.
static HTTP: LazyLock<auto::Builder<TokioExecutor>> = LazyLock::new(crate::http::server::builder);

/// Serves `listener` on every worker (each its own accept loop on a copy of the socket, so
/// a connection stays on the worker that accepted it), or on the caller's runtime when
/// there are no workers.
pub fn spawn(
    workers: &Workers,
    listener: TcpListener,
    shared: &Arc<Shared>,
    direction: Direction,
) -> Vec<JoinHandle<()>> {
    let Some(handles) = workers.handles() else {
        return vec![tokio::spawn(serve(listener, shared.clone(), direction))];
    };
    let socket = match listener.into_std() {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!("cannot hand a listener to the workers: {e}");
            return Vec::new();
        }
    };
    let mut accepting = Vec::with_capacity(handles.len());
    for handle in handles {
        let copy = match socket.try_clone() {
            Ok(copy) => copy,
            Err(e) => {
                tracing::error!("a worker cannot accept: {e}");
                continue;
            }
        };
        let shared = shared.clone();
        accepting.push(handle.spawn(async move {
            match TcpListener::from_std(copy) {
                Ok(listener) => serve(listener, shared, direction).await,
                Err(e) => tracing::error!("a worker cannot accept: {e}"),
            }
        }));
    }
    accepting
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, direction: Direction) {
    let mut drain = shared.drain.watch();
    // As Envoy warms a listener before serving it: nothing is accepted until the first
    // config is applied. The socket listens already, so a client that connects meanwhile
    // waits in the kernel's accept queue and is answered with config, not from an empty
    // registry (502 BlackHoleCluster). With no timeout, as Istio's initial_fetch_timeout 0s.
    let mut status = shared.config.subscribe();
    tokio::select! {
        _ = drain.started(), if drains(direction) => return,
        configured = status.wait_for(|s| s.version > 0) => {
            if configured.is_err() {
                return;
            }
        }
    }
    drop(status);
    loop {
        let accepted = tokio::select! {
            // Returning drops the socket: new connections are refused from then on.
            _ = drain.started(), if drains(direction) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                tokio::spawn(connection(shared.clone(), stream, remote, direction));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    direction: Direction,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    if direction == Direction::Gateway {
        return Box::pin(gateway(shared, stream, remote, local)).await;
    }
    captured(shared, stream, remote, local, direction).await;
}

/// What a gateway does with a connection, decided from the config in force when it came.
enum GatewayPlan {
    Http,
    Tcp(L4Target),
    Terminate {
        config: Arc<rustls::ServerConfig>,
        server: Arc<str>,
        then: AfterTls,
    },
    Mesh {
        server: Arc<str>,
        then: AfterTls,
    },
    Refuse(String),
}

/// What a terminated connection carries.
enum AfterTls {
    /// HTTPS: the server's route table.
    Http,
    Tcp(L4Target),
    /// A TLS server no `tcp` route is bound to.
    Close,
}

/// A connection on a Gateway server's port. Callers address the gateway itself (no
/// original destination); a TLS port reads the ClientHello to pick the server by SNI.
async fn gateway(shared: Arc<Shared>, stream: TcpStream, remote: SocketAddr, local: SocketAddr) {
    let mut conn = ConnInfo {
        direction: Direction::Gateway,
        remote,
        local,
        original_dst: None,
        mtls: None,
        terminated_by: None,
        requested_server_name: None,
        access_log_hint: None,
    };
    let cluster = |c: &WeightedClusters| L4Target::Cluster(c.pick().cluster.clone());
    // As read_client_hello leaves a TLS port's stream, so every plan gets one type.
    let plain = |s| Prefixed::new(Bytes::new(), Prefixed::new(Bytes::new(), s));
    let snapshot = shared.config.current();
    let (plan, io) = match snapshot.gateway_ports.get(&local.port()) {
        // hyper tells HTTP/1.1 from h2c by the preface.
        None | Some(GatewayPort::Http(_)) => (GatewayPlan::Http, plain(stream)),
        Some(GatewayPort::Tcp(route)) => (
            route.as_ref().map_or_else(
                || GatewayPlan::Refuse("no VirtualService binds a tcp route to the port".into()),
                |c| GatewayPlan::Tcp(cluster(c)),
            ),
            plain(stream),
        ),
        Some(port @ GatewayPort::Tls(_)) => {
            let Some((hello, io)) = read_client_hello(Prefixed::new(Bytes::new(), stream)).await
            else {
                return;
            };
            let sni = hello.server_name.as_deref();
            let then = |serves: &Serves| match serves {
                Serves::Http(_) => AfterTls::Http,
                Serves::Tcp(Some(c)) => AfterTls::Tcp(cluster(c)),
                Serves::Tcp(None) | Serves::Tls(_) => AfterTls::Close,
            };
            let plan = match port.server_for(sni) {
                None => GatewayPlan::Refuse(format!(
                    "no server on the port takes server name {}",
                    sni.unwrap_or("(none)")
                )),
                Some(server) => match (&server.tls, &server.serves) {
                    (ServerTls::Passthrough, Serves::Tls(routes)) => {
                        match routes
                            .iter()
                            .find(|r| sni.is_some_and(|sni| r.matches(sni, None)))
                        {
                            Some(r) => GatewayPlan::Tcp(cluster(&r.clusters)),
                            None => GatewayPlan::Refuse(format!(
                                "no tls route bound to {} matches server name {}",
                                server.gateway,
                                sni.unwrap_or("(none)")
                            )),
                        }
                    }
                    (ServerTls::Terminate { config, .. }, serves) => GatewayPlan::Terminate {
                        config: config.clone(),
                        server: server.name.clone(),
                        then: then(serves),
                    },
                    (ServerTls::Mesh, serves) => GatewayPlan::Mesh {
                        server: server.name.clone(),
                        then: then(serves),
                    },
                    (ServerTls::Unavailable(why), _) => GatewayPlan::Refuse(why.clone()),
                    (ServerTls::Passthrough, _) => {
                        GatewayPlan::Refuse("passthrough carries no routes".into())
                    }
                },
            };
            conn.requested_server_name = hello.server_name.as_deref().map(Arc::from);
            (plan, io)
        }
    };
    drop(snapshot);
    match plan {
        GatewayPlan::Http => serve_http(shared, io, Arc::new(conn)).await,
        GatewayPlan::Tcp(target) => {
            let to = conn.local;
            if connection_allowed(&shared, &mut conn, to) {
                tcp::proxy(&shared, io, target, &conn).await
            }
        }
        GatewayPlan::Refuse(why) => {
            tracing::debug!(%remote, port = local.port(), "gateway connection refused: {why}");
        }
        GatewayPlan::Terminate {
            config,
            server,
            then,
        } => {
            let tls = match crate::transport::tls::terminate(config, io).await {
                Ok(tls) => tls,
                Err(e) if e.to_string().contains("UnsupportedCertVersion") => {
                    tracing::warn!(%remote, %server, "gateway TLS handshake failed: the client's certificate is X.509 v1, which is not checked; re-issue it with extensions (openssl x509 -req … -extfile with extendedKeyUsage = clientAuth)");
                    return;
                }
                Err(e) => {
                    tracing::debug!(%remote, %server, "gateway TLS handshake failed: {e}");
                    return;
                }
            };
            conn.terminated_by = Some(server);
            after_termination(shared, tls, conn, then).await;
        }
        GatewayPlan::Mesh { server, then } => {
            let Some(mesh) = shared.tls.clone() else {
                tracing::warn!(%server, "ISTIO_MUTUAL needs the proxy's mesh certificate, which it has none of");
                return;
            };
            let (tls, peer) = match mesh.accept(io).await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(%remote, %server, "gateway mTLS handshake failed: {e}");
                    return;
                }
            };
            conn.terminated_by = Some(server);
            conn.mtls = Some(peer);
            after_termination(shared, tls, conn, then).await;
        }
    }
}

/// Whether AuthorizationPolicies let a TCP connection to `destination` through (HTTP is
/// checked per request), noting on it what AUDIT policies made of it; a denied one is to
/// be closed, as Envoy's network RBAC filter closes it.
fn connection_allowed(shared: &Shared, conn: &mut ConnInfo, destination: SocketAddr) -> bool {
    let snapshot = shared.config.current();
    if snapshot.authz.is_empty() {
        return true;
    }
    let subject = Subject::connection(conn, destination);
    let audited = snapshot.authz.audited(&subject);
    let verdict = snapshot.authz.check(&subject);
    conn.access_log_hint = audited;
    match verdict {
        Ok(()) => true,
        Err(denied) => {
            tracing::debug!(remote = %conn.remote, details = %denied.details, "connection denied: {}", denied.hint);
            false
        }
    }
}

/// A terminated gateway connection: HTTP by the server's routes, or TCP to its route.
async fn after_termination<S>(shared: Arc<Shared>, io: S, mut conn: ConnInfo, then: AfterTls)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match then {
        AfterTls::Http => serve_http(shared, io, Arc::new(conn)).await,
        AfterTls::Tcp(target) => {
            let to = conn.local;
            if connection_allowed(&shared, &mut conn, to) {
                tcp::proxy(&shared, io, target, &conn).await
            }
        }
        AfterTls::Close => {
            tracing::debug!(remote = %conn.remote, "gateway connection closed: no tcp route is bound to its TLS server");
        }
    }
}

/// A connection on the outbound or inbound capture port.
async fn captured(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    direction: Direction,
) {
    let original_dst = shared.orig_dst.lookup(&stream);
    let snapshot = shared.config.current();
    let declared = original_dst
        .filter(|_| direction == Direction::Outbound)
        .and_then(|d| {
            snapshot
                .registry
                .by_address(d.ip(), d.port())
                .and_then(|s| s.port(d.port()))
                .map(|p| p.protocol)
        })
        .or_else(|| original_dst.map(|d| Protocol::undeclared(d.port())));
    let peer = (direction == Direction::Inbound).then(|| {
        let port = original_dst
            .or(shared.inbound_target)
            .map_or(local.port(), |d| d.port());
        snapshot.inbound_mtls.for_port(port)
    });
    let mode = peer.map_or(MtlsMode::Permissive, |d| d.mode);
    let (detected, prefix) = match declared {
        Some(p) if p.is_http() => (Detected::Http1, Bytes::new()),
        Some(Protocol::Tcp)
            if mode == MtlsMode::Disable
                || (mode == MtlsMode::Permissive
                    && !may_be_mtls(&shared, &stream, direction).await) =>
        {
            (Detected::Tcp, Bytes::new())
        }
        _ => match sniff(&mut stream).await {
            Ok(found) => found,
            Err(_) => return,
        },
    };
    if mode == MtlsMode::Strict && detected != Detected::Tls {
        // As Envoy finds no filter chain for it: reset, so a plaintext client sees
        // `connection reset by peer` (curl's exit 56 in Istio's mTLS migration task).
        tracing::debug!(%remote, by = ?peer.and_then(|d| d.by.as_deref()), "plaintext connection refused: mTLS is STRICT");
        let _ = stream.set_zero_linger();
        return;
    }
    let conn = ConnInfo {
        direction,
        remote,
        local,
        original_dst,
        mtls: None,
        terminated_by: None,
        requested_server_name: None,
        access_log_hint: None,
    };
    let io = Prefixed::new(prefix, stream);
    match detected {
        Detected::Http1 | Detected::Http2 => serve_http(shared, io, Arc::new(conn)).await,
        // Boxed: a plaintext connection's future does not carry the TLS state's space
        // for its whole life.
        Detected::Tls => Box::pin(tls(shared, io, conn, &snapshot, mode)).await,
        Detected::Tcp if direction == Direction::Outbound => {
            let target = tcp::route_tcp(&snapshot, original_dst, None);
            tcp::proxy(&shared, io, target, &conn).await;
        }
        Detected::Tcp => to_app(&shared, io, conn).await,
    }
}

/// A connection that starts with a TLS ClientHello: outbound, routed by SNI unterminated;
/// inbound, Istio's mTLS from a sidecar is terminated (unless PeerAuthentication disables
/// it), the app's own TLS passed through (unless it requires mTLS).
async fn tls<S>(
    shared: Arc<Shared>,
    io: Prefixed<S>,
    mut conn: ConnInfo,
    snapshot: &Snapshot,
    mode: MtlsMode,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some((hello, io)) = read_client_hello(io).await else {
        return;
    };
    conn.requested_server_name = hello.server_name.as_deref().map(Arc::from);
    let (remote, original_dst) = (conn.remote, conn.original_dst);
    if conn.direction == Direction::Outbound {
        let port = original_dst.map_or(443, |d| d.port());
        let sni = hello.server_name.as_deref();
        let target = tcp::route_tls(snapshot, port, sni, original_dst);
        return tcp::proxy(&shared, io, target, &conn).await;
    }
    let mesh = shared
        .tls
        .clone()
        .filter(|_| hello.offers_istio() && mode != MtlsMode::Disable);
    let Some(mesh) = mesh else {
        if mode == MtlsMode::Strict {
            tracing::debug!(%remote, "TLS without Istio's ALPN refused: mTLS is STRICT");
            return;
        }
        // The app's own TLS (or, with mTLS disabled, a sidecar's): passed through to it.
        return to_app(&shared, io, conn).await;
    };
    let (io, peer) = match mesh.accept(io).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::warn!(%remote, "inbound mTLS handshake failed: {e}");
            return;
        }
    };
    let http = peer.http;
    conn.mtls = Some(peer);
    if http {
        return serve_http(shared, io, Arc::new(conn)).await;
    }
    // `istio`: the caller's sidecar carries TCP, which goes to the app as it came.
    to_app(&shared, io, conn).await;
}

/// An inbound connection's bytes, spliced to the local workload as they came, once its
/// AuthorizationPolicies allow the connection (a denied one is closed, as Envoy's network
/// RBAC filter closes it).
async fn to_app<S: AsyncRead + AsyncWrite + Unpin>(shared: &Shared, io: S, mut conn: ConnInfo) {
    let Some(app) = conn.original_dst.or(shared.inbound_target) else {
        return;
    };
    if connection_allowed(shared, &mut conn, app) {
        tcp::proxy(shared, io, L4Target::Passthrough(app), &conn).await;
    }
}

/// How long an inbound connection to a server-first port (MySQL, SMTP...) is watched for a
/// sidecar's ClientHello before it is taken for a plaintext client waiting for the server.
/// A sidecar sends its ClientHello at once; a plaintext client waits this long for the
/// server's greeting.
const SERVER_FIRST_MTLS_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether an inbound connection on a port that is not sniffed starts with TLS, by peeking
/// at its first byte without reading it.
async fn may_be_mtls(shared: &Shared, stream: &TcpStream, direction: Direction) -> bool {
    if direction != Direction::Inbound || shared.tls.is_none() {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(SERVER_FIRST_MTLS_WAIT, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    )
}

/// Whether a direction's listeners and connections drain on shutdown: not outbound, which
/// serves the app until the proxy exits (Istio drains a sidecar's inbound listeners only).
fn drains(direction: Direction) -> bool {
    direction != Direction::Outbound
}

async fn serve_http<S>(shared: Arc<Shared>, io: S, conn: Arc<ConnInfo>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut drain = drains(conn.direction).then(|| shared.drain.watch());
    // hyper keeps the space of one request's future for the connection's life: boxed, an
    // idle keep-alive connection holds a pointer instead (~7 KiB less in a debug build).
    let service = service_fn(move |req| Box::pin(handle(shared.clone(), conn.clone(), req)));
    let closing;
    let mut builder: &auto::Builder<TokioExecutor> = &HTTP;
    if drain.as_ref().is_some_and(|d| d.is_draining()) {
        // Accepted just before the drain: answer what was sent, then close. A graceful
        // shutdown now would close before reading the request.
        let mut b = HTTP.clone();
        b.http1().keep_alive(false);
        closing = b;
        builder = &closing;
        drain = None;
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let ended = match drain.as_mut() {
        Some(drain) => tokio::select! {
            ended = conn.as_mut() => ended,
            _ = drain.started() => {
                // HTTP/1.1: `Connection: close` on the response in flight, or closed when
                // idle; HTTP/2: GOAWAY, streams in flight finish.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        },
        None => conn.await,
    };
    if let Err(e) = ended {
        tracing::debug!("connection ended: {e}");
    }
}

/// Reads the first TLS record (bounded by its own length field) and what its ClientHello
/// asks for.
async fn read_client_hello<S: AsyncRead + Unpin>(
    mut io: Prefixed<S>,
) -> Option<(sni::ClientHello, Prefixed<Prefixed<S>>)> {
    let mut buf = Vec::with_capacity(512);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let want = sni::record_len(&buf).unwrap_or(5);
        if buf.len() >= want {
            break;
        }
        let mut chunk = vec![0u8; want - buf.len()];
        let n = tokio::time::timeout_at(deadline, io.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let hello = sni::parse(&buf).unwrap_or_default();
    Some((hello, Prefixed::new(buf.into(), io)))
}

//! Every connection the proxy opens upstream. When the platform asks, they carry a socket
//! mark so the pod's iptables rules let the proxy's own traffic out instead of capturing it
//! again: istio-init exempts the proxy's uid, but a rootless pod has only one uid.

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio::net::{TcpSocket, TcpStream};

static UPSTREAM_MARK: OnceLock<u32> = OnceLock::new();

/// Marks every upstream connection from now on with `mark` (`SO_MARK`; needs
/// CAP_NET_ADMIN in the network namespace's user namespace). Set once, at start.
pub fn mark_upstream_connections(mark: u32) -> io::Result<()> {
    UPSTREAM_MARK
        .set(mark)
        .map_err(|_| io::Error::other("the upstream mark is already set"))
}

/// Connects to `host:port`, trying each address it resolves to, as `TcpStream::connect`.
pub async fn connect(authority: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(authority).await? {
        match connect_addr(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{authority} resolves to no address"),
        )
    }))
}

pub async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(mark) = UPSTREAM_MARK.get() {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, mark).map_err(
            |e| {
                io::Error::other(format!(
                    "cannot mark the upstream socket (SO_MARK {mark}): {e}"
                ))
            },
        )?;
    }
    socket.connect(addr).await
}

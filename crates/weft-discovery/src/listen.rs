//! Listening sockets that take a burst of connections: the accept queue is the system's
//! `somaxconn` rather than tokio's 128.

use std::net::SocketAddr;
use std::sync::LazyLock;
use tokio::net::{TcpListener, TcpSocket};

/// Binds and listens with the system's `somaxconn` as the accept queue (tokio's
/// `TcpListener::bind` uses 128, which a burst of connections overflows: the kernel then
/// drops SYNs and clients wait a retransmission, a second or more).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio does: a restarted process rebinds while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog())
}

/// `net.core.somaxconn` of this network namespace (the kernel caps any larger
/// value to it); Linux's default since 5.4 when it cannot be read.
fn backlog() -> u32 {
    static BACKLOG: LazyLock<u32> = LazyLock::new(|| {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(4096)
    });
    *BACKLOG
}

//! Ports of the host that reach into the sandbox. The sandbox has its own network
//! namespace, so `weft up` (on the host) and the sandbox meet at Unix sockets in the state
//! directory, which belong to the file system, not to a network namespace: the host side
//! accepts TCP and dials the socket, the sandbox side accepts on the socket and dials TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Host side: TCP on `listener` to the Unix socket at `path`.
pub async fn tcp_to_unix(listener: TcpListener, path: PathBuf) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            continue;
        };
        let path = path.clone();
        tokio::spawn(async move {
            match UnixStream::connect(&path).await {
                Ok(mut unix) => {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
                Err(e) => tracing::warn!("the mesh is not answering on {}: {e}", path.display()),
            }
        });
    }
}

/// Sandbox side: the Unix socket at `path` to TCP `target`.
pub fn unix_to_tcp(
    path: PathBuf,
    target: SocketAddr,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut unix, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                match TcpStream::connect(target).await {
                    Ok(mut tcp) => {
                        let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
                    }
                    Err(e) => tracing::warn!("cannot reach {target} inside the mesh: {e}"),
                }
            });
        }
    }))
}

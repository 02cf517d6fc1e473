//! Benchmarking Weft: a load generator (`weft bench load`), the upstream it drives
//! (`weft bench server`), the side-by-side comparison with Envoy and a direct connection
//! (`weft bench compare`, run by `bench/run.sh`), and simulated proxies against
//! the control plane (`weft bench control-plane`, run by `bench/control-plane.sh`), and the
//! dashboard's aggregator scraping them (`weft bench dashboard`, run there too).
#![forbid(unsafe_code)]

pub mod compare;
pub mod control_plane;
pub mod dashboard;
pub mod fake_apiserver;
pub mod load;
pub mod procfs;
pub mod report;
pub mod server;
pub mod topology;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of a plain `GET path` on `addr` (a proxy's or the dashboard's stats), over a
/// fresh connection; anything but a 200 is an error naming the request.
pub(crate) async fn plain_get(addr: &str, path: &str) -> Result<Vec<u8>, String> {
    let failed = |why: String| format!("GET {path} on {addr}: {why}");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| failed("no HTTP answer".into()))?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(failed(
            String::from_utf8_lossy(&answer[..head_end]).into_owned(),
        ));
    }
    Ok(answer.split_off(head_end + 4))
}

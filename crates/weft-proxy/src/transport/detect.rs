//! Protocol sniffing for ports that declare none: read a few bytes (bounded in time and
//! size), decide, and replay them to whoever handles the connection.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Enough for the HTTP/2 preface or the longest method name and a space.
const SNIFF_BYTES: usize = H2_PREFACE.len();
/// Server-first protocols (MySQL, SMTP) send nothing: after this long, treat as TCP.
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tls,
    Tcp,
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Classifies what has been read so far; `None` while more bytes could still change it.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(if buf.len() < 2 || buf[1] == 0x03 {
            Detected::Tls
        } else {
            Detected::Tcp
        });
    }
    if H2_PREFACE.starts_with(buf) {
        return (buf.len() == H2_PREFACE.len()).then_some(Detected::Http2);
    }
    let mut undecided = false;
    for m in METHODS {
        let with_space = m.len() + 1;
        if buf.len() >= with_space {
            if buf.starts_with(m.as_bytes()) && buf[m.len()] == b' ' {
                return Some(Detected::Http1);
            }
        } else if m.as_bytes().starts_with(&buf[..buf.len().min(m.len())])
            && (buf.len() <= m.len() || buf[m.len()] == b' ')
        {
            undecided = true;
        }
    }
    (!undecided).then_some(Detected::Tcp)
}

/// Reads until the protocol is clear, the byte bound is hit, the peer stops sending or the
/// time runs out. Returns the bytes read, to be replayed.
pub async fn sniff<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> io::Result<(Detected, Bytes)> {
    let mut buf = vec![0u8; SNIFF_BYTES];
    let mut filled = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while filled < SNIFF_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[filled..])).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => return Err(e),
        }
        if let Some(d) = classify(&buf[..filled]) {
            buf.truncate(filled);
            return Ok((d, buf.into()));
        }
    }
    buf.truncate(filled);
    Ok((classify(&buf).unwrap_or(Detected::Tcp), buf.into()))
}

/// A stream that first yields bytes already read from it.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PATCH "), Some(Detected::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0"), None);
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x01binary"), Some(Detected::Tcp));
        assert_eq!(classify(b"GETX"), Some(Detected::Tcp));
    }

    #[tokio::test]
    async fn sniffed_bytes_are_replayed() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"POST /x HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut server = server;
        let (d, prefix) = sniff(&mut server, SNIFF_TIMEOUT).await.unwrap();
        assert_eq!(d, Detected::Http1);
        let mut replay = Prefixed::new(prefix, server);
        let mut out = vec![0u8; 18];
        replay.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"POST /x HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peers_are_tcp_after_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (d, prefix) = sniff(&mut server, SNIFF_TIMEOUT).await.unwrap();
        assert_eq!((d, prefix.len()), (Detected::Tcp, 0));
    }
}

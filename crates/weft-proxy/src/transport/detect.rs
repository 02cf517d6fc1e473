//! Protocol sniffing for ports that declare none: read the first bytes, decide, and
//! replay them to whoever handles the connection. As with Istio's default
//! `protocolDetectionTimeout: 0s`, there is no time limit: a client that connects ahead of
//! use is waited for (server-first ports are never sniffed: `Protocol::undeclared`).

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The first read: enough for the HTTP/2 preface or any common method and a space.
const SNIFF_BYTES: usize = H2_PREFACE.len();
/// The most read before deciding: a request line with an uncommon method must end within
/// it to be taken for HTTP/1 (Envoy's inspector reads up to 64 KiB; common methods are
/// decided within their first few bytes).
const SNIFF_LIMIT: usize = 8 * 1024;
/// No method is longer; a first word longer than this without a space is no request line.
const METHOD_LIMIT: usize = 32;

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
    let common = METHODS
        .iter()
        .any(|m| buf.len() > m.len() && buf.starts_with(m.as_bytes()) && buf[m.len()] == b' ');
    if common {
        return Some(Detected::Http1);
    }
    request_line(buf)
}

/// Any other first line shaped `METHOD SP TARGET SP HTTP/1.x` is HTTP/1, whatever its
/// method: the HTTP server then answers a malformed one with 400 instead of the bytes being
/// passed on as TCP. Anything that cannot become such a line is TCP.
fn request_line(buf: &[u8]) -> Option<Detected> {
    let end = buf.iter().position(|&b| b == b'\n');
    let line = match end {
        Some(n) => buf[..n].strip_suffix(b"\r").unwrap_or(&buf[..n]),
        None => buf,
    };
    if !line.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return Some(Detected::Tcp);
    }
    let first_space = line.iter().position(|&b| b == b' ');
    if end.is_none() {
        let method_too_long = first_space.is_none() && line.len() > METHOD_LIMIT;
        let undecided = first_space != Some(0) && !method_too_long && buf.len() < SNIFF_LIMIT;
        return (!undecided).then_some(Detected::Tcp);
    }
    let mut words = line.split(|&b| b == b' ');
    let shaped = match (words.next(), words.next(), words.next(), words.next()) {
        (Some(method), Some(target), Some(version), None) => {
            !method.is_empty()
                && !target.is_empty()
                && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
        }
        _ => false,
    };
    Some(if shaped {
        Detected::Http1
    } else {
        Detected::Tcp
    })
}

/// Reads until the protocol is clear, the byte bound is hit or the peer stops sending.
/// Returns the bytes read, to be replayed.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Detected, Bytes)> {
    let mut buf = vec![0u8; SNIFF_BYTES];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled >= SNIFF_LIMIT {
                break;
            }
            buf.resize((filled * 8).min(SNIFF_LIMIT), 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
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
        assert_eq!(classify(b"GETX\r\n"), Some(Detected::Tcp));
        assert_eq!(classify(b"PING\r\n"), Some(Detected::Tcp));
    }

    #[test]
    fn other_request_lines_are_http1_once_they_end() {
        assert_eq!(classify(b"G@T / HTTP/1.1"), None);
        assert_eq!(classify(b"G@T / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"PROPFIND /x HTTP/1.0\n"), Some(Detected::Http1));
        assert_eq!(classify(b"G@T / HTTP/2\r\n"), Some(Detected::Tcp));
        assert_eq!(classify(b" / HTTP/1.1\r\n"), Some(Detected::Tcp));
        assert_eq!(classify(&[b'A'; METHOD_LIMIT + 1]), Some(Detected::Tcp));
        let mut long = b"M /".to_vec();
        long.resize(SNIFF_LIMIT, b'a');
        assert_eq!(classify(&long), Some(Detected::Tcp));
    }

    #[tokio::test]
    async fn sniffed_bytes_are_replayed() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"POST /x HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut server = server;
        let (d, prefix) = sniff(&mut server).await.unwrap();
        assert_eq!(d, Detected::Http1);
        let mut replay = Prefixed::new(prefix, server);
        let mut out = vec![0u8; 18];
        replay.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"POST /x HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_long_request_line_is_read_across_reads() {
        let (mut client, mut server) = tokio::io::duplex(16);
        let line = format!("MKCALENDAR /{} HTTP/1.1\r\n", "c".repeat(500));
        let len = line.len();
        let writer = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut client, line.as_bytes())
                .await
                .unwrap();
            client
        });
        let (d, prefix) = sniff(&mut server).await.unwrap();
        assert_eq!((d, prefix.len()), (Detected::Http1, len));
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_peer_that_closes_first_is_tcp() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let (d, prefix) = sniff(&mut server).await.unwrap();
        assert_eq!((d, prefix.len()), (Detected::Tcp, 0));
    }
}

//! Splicing two byte streams both ways, reporting the bytes each way while the connection
//! lives (by default every [`FLUSH`], as Envoy flushes TCP stats) and when it ends, cleanly
//! or reset.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often a live connection's bytes are reported unless Telemetry's
/// `metrics[].reportingInterval` says otherwise.
pub const FLUSH: Duration = Duration::from_secs(5);

/// Copies `downstream` ⇄ `upstream` until both sides are done or one fails. `report`
/// gets (received from downstream, sent to downstream) since its last call, at least
/// every `every`. Returns the totals.
pub async fn splice<A, B>(
    downstream: &mut A,
    upstream: &mut B,
    every: Duration,
    mut report: impl FnMut(u64, u64),
) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (received, sent) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut reported = (0, 0);
    let mut flush = |reported: &mut (u64, u64)| {
        let now = (received.load(Relaxed), sent.load(Relaxed));
        if now != *reported {
            report(now.0 - reported.0, now.1 - reported.1);
            *reported = now;
        }
    };
    {
        let mut down = Counted {
            inner: downstream,
            read: &received,
        };
        let mut up = Counted {
            inner: upstream,
            read: &sent,
        };
        let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
        tokio::pin!(copy);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = &mut copy => break,
                _ = tick.tick() => flush(&mut reported),
            }
        }
    }
    flush(&mut reported);
    (received.into_inner(), sent.into_inner())
}

/// A stream that counts the bytes read from it.
struct Counted<'a, S: ?Sized> {
    inner: &'a mut S,
    read: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read
                .fetch_add((buf.filled().len() - before) as u64, Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A long connection reports its bytes while it lives, and a reset loses none.
    #[tokio::test(start_paused = true)]
    async fn bytes_are_reported_while_the_connection_lives_and_when_it_breaks() {
        let (mut client, mut down) = tokio::io::duplex(1024);
        let (mut up, mut server) = tokio::io::duplex(1024);
        let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = reports.clone();
        let spliced = tokio::spawn(async move {
            splice(&mut down, &mut up, FLUSH, |r, s| {
                seen.lock().unwrap().push((r, s))
            })
            .await
        });
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(b"hi").await.unwrap();
        client.read_exact(&mut buf[..2]).await.unwrap();
        tokio::time::sleep(FLUSH + Duration::from_millis(10)).await;
        assert_eq!(*reports.lock().unwrap(), [(5, 2)]);
        client.write_all(b"more").await.unwrap();
        server.read_exact(&mut buf[..4]).await.unwrap();
        // The server goes away without a clean close: what passed is still counted.
        drop(server);
        drop(client);
        assert_eq!(spliced.await.unwrap(), (9, 2));
        assert_eq!(*reports.lock().unwrap(), [(5, 2), (4, 0)]);
    }
}

//! Request bodies that can be replayed for retries and mirrors (up to a bound), and
//! response bodies that report how much was sent and when the stream ended.

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Bodies up to this size are buffered so a retry can send them again (Linkerd's bound).
pub const REPLAY_LIMIT: usize = 64 * 1024;
/// How long to wait for a body of unknown length to end before streaming it unbuffered.
const UNKNOWN_LENGTH_WAIT: Duration = Duration::from_millis(10);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts gRPC messages in a stream of DATA: each is a 5-byte prefix (compressed flag,
/// 32-bit length) and that many bytes, split across frames however the peer likes.
#[derive(Debug, Default, Clone)]
pub struct GrpcMessages {
    prefix: [u8; 5],
    filled: usize,
    remaining: u64,
    pub count: u64,
}

impl GrpcMessages {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(self.remaining.try_into().unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(5 - self.filled);
            self.prefix[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == 5 {
                self.count += 1;
                self.filled = 0;
                let length = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.remaining = u32::from_be_bytes(length).into();
            }
        }
    }
}

/// A request's message count, shared between the body that goes upstream and the
/// response's end, where metrics are recorded.
pub type MessageCount = Arc<AtomicU64>;

/// What goes upstream: buffered chunks, then (when the body was too large or slow to buffer)
/// the rest of the caller's stream.
#[derive(Debug, Default)]
pub struct RequestBody {
    chunks: VecDeque<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
    /// Counting the gRPC messages of `rest` as they pass (buffered chunks are counted when
    /// read, so a replay counts nothing twice). Boxed: hyper's client keeps room for 32
    /// requests per upstream connection, so every byte here costs 32 on each one.
    messages: Option<Box<(GrpcMessages, MessageCount)>>,
}

impl RequestBody {
    pub fn empty() -> RequestBody {
        RequestBody::default()
    }

    /// The caller's body sent on as it arrives, never replayed; its gRPC messages are
    /// counted into `messages`.
    pub fn streaming(body: Incoming, messages: Option<MessageCount>) -> RequestBody {
        RequestBody {
            rest: Some(body),
            messages: messages.map(|m| Box::new((GrpcMessages::default(), m))),
            ..RequestBody::default()
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(rest) = self.rest.as_mut() {
            match Pin::new(rest).poll_frame(cx) {
                Poll::Ready(None) => self.rest = None,
                other => {
                    if let (Poll::Ready(Some(Ok(frame))), Some(counting)) =
                        (&other, self.messages.as_deref_mut())
                    {
                        let (parser, count) = counting;
                        if let Some(data) = frame.data_ref() {
                            parser.feed(data);
                            count.store(parser.count, Ordering::Relaxed);
                        }
                    }
                    return other;
                }
            }
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let mut hint = rest.size_hint();
                hint.set_lower(hint.lower() + buffered);
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

/// A caller's body, either held whole (replayable) or part-read and streaming.
pub enum Buffered {
    Replayable {
        chunks: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Streaming(RequestBody),
}

impl Buffered {
    /// Reads `body` into memory when it is known (or quickly seen) to fit the bound,
    /// counting its gRPC messages into `messages` when given.
    pub async fn read(
        body: Incoming,
        content_length: Option<u64>,
        messages: Option<MessageCount>,
    ) -> Result<Buffered, hyper::Error> {
        let mut parser = GrpcMessages::default();
        let read = Buffered::read_counting(body, content_length, &mut parser).await;
        match (read, messages) {
            (Ok(Buffered::Streaming(mut streaming)), Some(count)) => {
                count.store(parser.count, Ordering::Relaxed);
                streaming.messages = Some(Box::new((parser, count)));
                Ok(Buffered::Streaming(streaming))
            }
            (read, Some(count)) => {
                count.store(parser.count, Ordering::Relaxed);
                read
            }
            (read, None) => read,
        }
    }

    async fn read_counting(
        mut body: Incoming,
        content_length: Option<u64>,
        parser: &mut GrpcMessages,
    ) -> Result<Buffered, hyper::Error> {
        let mut chunks = Vec::new();
        let mut size = 0usize;
        if content_length.is_some_and(|l| l as usize > REPLAY_LIMIT) {
            return Ok(Buffered::Streaming(RequestBody::streaming(body, None)));
        }
        let deadline = content_length
            .is_none()
            .then(|| tokio::time::Instant::now() + UNKNOWN_LENGTH_WAIT);
        use http_body_util::BodyExt;
        while !body.is_end_stream() {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => break,
                },
                None => body.frame().await,
            };
            match next {
                None => {
                    return Ok(Buffered::Replayable {
                        chunks,
                        trailers: None,
                    })
                }
                Some(frame) => match frame?.into_data() {
                    Ok(data) => {
                        size += data.remaining();
                        parser.feed(&data);
                        chunks.push(data);
                        if size > REPLAY_LIMIT {
                            break;
                        }
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        return Ok(Buffered::Replayable { chunks, trailers });
                    }
                },
            }
        }
        if body.is_end_stream() {
            return Ok(Buffered::Replayable {
                chunks,
                trailers: None,
            });
        }
        Ok(Buffered::Streaming(RequestBody {
            chunks: chunks.into(),
            rest: Some(body),
            trailers: None,
            messages: None,
        }))
    }

    /// A body for one more try, or `None` when the body was streamed and is gone.
    pub fn replay(&self) -> Option<RequestBody> {
        match self {
            Buffered::Replayable { chunks, trailers } => Some(RequestBody {
                chunks: chunks.iter().cloned().collect(),
                rest: None,
                trailers: trailers.clone(),
                messages: None,
            }),
            Buffered::Streaming(_) => None,
        }
    }
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// How a response stream ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Complete,
    /// The caller went away or the upstream broke mid-stream.
    Incomplete,
    /// The route timeout ran out before the last byte (Envoy's `UT`).
    TimedOut,
}

/// What a response stream was when it ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub sent: u64,
    pub how: End,
    /// `grpc-status` from the trailers, where gRPC puts it after the messages.
    pub grpc_status: Option<u16>,
    /// gRPC messages sent, when counted ([`ResponseBody::count_grpc_messages`]).
    pub messages: u64,
}

/// The route timeout expired while the response was still streaming.
#[derive(Debug, thiserror::Error)]
#[error("upstream request timeout: the route timeout expired before the response ended")]
pub struct BodyTimeout;

/// What goes back to the caller. It counts the bytes sent, keeps the request's limits and
/// in-flight marks alive until the last byte, enforces the rest of the route timeout, and
/// calls `on_end` once, when the stream ends or is dropped.
pub struct ResponseBody {
    inner: Inner,
    sent: u64,
    grpc_status: Option<u16>,
    messages: Option<GrpcMessages>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    on_end: Option<Box<dyn FnOnce(Ended) + Send + Sync>>,
    _held: Option<Box<dyn Send + Sync>>,
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let bytes = bytes.into();
        ResponseBody::new(Inner::Full((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::new(Inner::Full(None))
    }

    pub fn upstream(body: Incoming) -> ResponseBody {
        ResponseBody::new(Inner::Upstream(body))
    }

    fn new(inner: Inner) -> ResponseBody {
        ResponseBody {
            inner,
            sent: 0,
            grpc_status: None,
            messages: None,
            deadline: None,
            on_end: None,
            _held: None,
        }
    }

    /// `on_end` runs once when the body ends or is dropped.
    pub fn on_end(&mut self, f: impl FnOnce(Ended) + Send + Sync + 'static) {
        self.on_end = Some(Box::new(f));
    }

    /// Counts the gRPC messages the body carries, for `istio_response_messages_total`.
    pub fn count_grpc_messages(&mut self) {
        self.messages = Some(GrpcMessages::default());
    }

    pub fn hold(&mut self, held: impl Send + Sync + 'static) {
        self._held = Some(Box::new(held));
    }

    /// Envoy's route timeout spans the whole response: past `at`, the stream is cut.
    pub fn deadline(&mut self, at: tokio::time::Instant) {
        self.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
    }

    fn finish(&mut self, how: End) {
        if let Some(f) = self.on_end.take() {
            f(Ended {
                sent: self.sent,
                how,
                grpc_status: self.grpc_status,
                messages: self.messages.as_ref().map_or(0, |m| m.count),
            });
        }
        self._held = None;
        self.deadline = None;
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let how = if self.is_end_stream() {
            End::Complete
        } else {
            End::Incomplete
        };
        self.finish(how);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if let Some(messages) = self.messages.as_mut() {
                        messages.feed(data);
                    }
                    self.sent += len;
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.grpc_status = trailers
                        .get(crate::http::headers::GRPC_STATUS)
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                }
            }
            Poll::Ready(None) => self.finish(End::Complete),
            Poll::Ready(Some(Err(_))) => self.finish(End::Incomplete),
            Poll::Pending => {
                if let Some(deadline) = self.deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        self.finish(End::TimedOut);
                        return Poll::Ready(Some(Err(BodyTimeout.into())));
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GrpcMessages;

    #[test]
    fn grpc_messages_are_counted_across_any_split() {
        let mut stream = Vec::new();
        for len in [0u32, 3, 70_000, 1] {
            stream.push(0u8);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for chunk in [1, 2, 5, 6, 4096, stream.len()] {
            let mut m = GrpcMessages::default();
            stream.chunks(chunk).for_each(|c| m.feed(c));
            assert_eq!(m.count, 4, "chunks of {chunk}");
        }
    }
}

//! Request bodies that can be replayed for retries and mirrors (up to a bound), and
//! response bodies that report how much was sent and when the stream ended.

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Bodies up to this size are buffered so a retry can send them again (Linkerd's bound).
pub const REPLAY_LIMIT: usize = 64 * 1024;
/// How long to wait for a body of unknown length to end before streaming it unbuffered.
const UNKNOWN_LENGTH_WAIT: Duration = Duration::from_millis(10);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What goes upstream: buffered chunks, then (when the body was too large or slow to buffer)
/// the rest of the caller's stream.
#[derive(Debug, Default)]
pub struct RequestBody {
    chunks: VecDeque<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
}

impl RequestBody {
    pub fn empty() -> RequestBody {
        RequestBody::default()
    }

    /// The caller's body sent on as it arrives, never replayed.
    pub fn streaming(body: Incoming) -> RequestBody {
        RequestBody {
            rest: Some(body),
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
                other => return other,
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
    /// Reads `body` into memory when it is known (or quickly seen) to fit the bound.
    pub async fn read(
        mut body: Incoming,
        content_length: Option<u64>,
    ) -> Result<Buffered, hyper::Error> {
        let mut chunks = Vec::new();
        let mut size = 0usize;
        if content_length.is_some_and(|l| l as usize > REPLAY_LIMIT) {
            return Ok(Buffered::Streaming(RequestBody {
                chunks: VecDeque::new(),
                rest: Some(body),
                trailers: None,
            }));
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
        }))
    }

    /// A body for one more try, or `None` when the body was streamed and is gone.
    pub fn replay(&self) -> Option<RequestBody> {
        match self {
            Buffered::Replayable { chunks, trailers } => Some(RequestBody {
                chunks: chunks.iter().cloned().collect(),
                rest: None,
                trailers: trailers.clone(),
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
            deadline: None,
            on_end: None,
            _held: None,
        }
    }

    /// `on_end` runs once when the body ends or is dropped.
    pub fn on_end(&mut self, f: impl FnOnce(Ended) + Send + Sync + 'static) {
        self.on_end = Some(Box::new(f));
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
                    self.sent += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.grpc_status = trailers
                        .get("grpc-status")
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

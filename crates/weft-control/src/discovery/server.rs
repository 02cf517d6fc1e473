//! The discovery stream's gRPC method, served by hand rather than by tonic's generated
//! server: tonic encodes each message into a buffer of its own stream, so a snapshot sent
//! to a thousand proxies was a thousand copies. Here every stream sends the view's
//! encoded bytes themselves, and HTTP/2 pulls the next message only when the stream has
//! window for it, so a slow proxy holds a reference rather than a copy.

use super::DiscoveryService;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http_body::Frame;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codec::Streaming;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;
use tonic_prost::ProstDecoder;
use weft_discovery::discovery::ProxyMessage;

/// `proto/weft/discovery/v1/discovery.proto`'s one method.
const STREAM: &str = "/weft.discovery.v1.Discovery/Stream";

#[derive(Clone)]
pub struct DiscoveryServer(Arc<DiscoveryService>);

impl DiscoveryServer {
    pub fn new(service: DiscoveryService) -> DiscoveryServer {
        DiscoveryServer(Arc::new(service))
    }
}

impl NamedService for DiscoveryServer {
    const NAME: &'static str = "weft.discovery.v1.Discovery";
}

impl Service<http::Request<Body>> for DiscoveryServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            if request.uri().path() != STREAM {
                let status = Status::unimplemented(format!(
                    "{}: the discovery service has one method, {STREAM}",
                    request.uri().path()
                ));
                return Ok(status.into_http());
            }
            let (parts, body) = request.into_parts();
            let inbound =
                Streaming::new_request(ProstDecoder::<ProxyMessage>::default(), body, None, None);
            let request = tonic::Request::from_http(http::Request::from_parts(parts, inbound));
            Ok(match service.open(request).await {
                Ok(messages) => {
                    let mut response = http::Response::new(Body::new(Messages {
                        messages,
                        next: None,
                        ended: false,
                    }));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                    response
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// A response body of gRPC messages: each a 5-byte prefix (not compressed, length), then
/// the message's shared bytes; `grpc-status` in the trailers once the session ends.
struct Messages {
    messages: mpsc::Receiver<Bytes>,
    /// A message whose prefix went out.
    next: Option<Bytes>,
    ended: bool,
}

impl http_body::Body for Messages {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.next.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let status = match ready!(self.messages.poll_recv(cx)) {
            Some(message) => match u32::try_from(message.len()) {
                Ok(len) => {
                    let mut prefix = BytesMut::with_capacity(5);
                    prefix.put_u8(0);
                    prefix.put_u32(len);
                    self.next = Some(message);
                    return Poll::Ready(Some(Ok(Frame::data(prefix.freeze()))));
                }
                Err(_) => Status::resource_exhausted(format!(
                    "an update of {} bytes is more than gRPC can frame",
                    message.len()
                )),
            },
            None => Status::ok(""),
        };
        self.ended = true;
        let mut trailers = HeaderMap::new();
        // A status's own code and message always make valid header values.
        let _ = status.add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

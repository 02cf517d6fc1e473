//! The benchmark's upstream: a 1 KiB answer to any HTTP/1.1 request, and a 1 KiB gRPC
//! message with `grpc-status: 0` trailers to any HTTP/2 request.

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

pub const PAYLOAD: usize = 1024;

/// A body of one data frame and, for gRPC, trailers.
pub struct Answer {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match self.data.take() {
            Some(d) => Some(Frame::data(d)),
            None => self.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(frame.map(Ok))
    }
}

fn answer(req: &Request<Incoming>) -> Response<Answer> {
    if req.version() == http::Version::HTTP_2 {
        let mut message = vec![0u8; 5 + PAYLOAD];
        message[1..5].copy_from_slice(&(PAYLOAD as u32).to_be_bytes());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("valid header"));
        Response::builder()
            .header("content-type", "application/grpc")
            .body(Answer {
                data: Some(message.into()),
                trailers: Some(trailers),
            })
            .expect("valid response")
    } else {
        Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-length", PAYLOAD)
            .body(Answer {
                data: Some(Bytes::from_static(&[b'x'; PAYLOAD])),
                trailers: None,
            })
            .expect("valid response")
    }
}

pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                let response = answer(&req);
                // Drain what the caller sent so HTTP/2 flow control stays open.
                let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! `weft echo`: a tiny HTTP/1.1 and HTTP/2 server that names itself, for examples and
//! smoke tests (what httpbin and helloworld are to Istio's samples).

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;

pub async fn serve(name: String, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    eprintln!("weft echo {name:?} listening on {listen}");
    let name: &'static str = Box::leak(name.into_boxed_str());
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let user = req
                    .headers()
                    .get("end-user")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                let body = format!(
                    "{name} answered {} {} (end-user: {user})\n",
                    req.method(),
                    req.uri().path()
                );
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .header("x-served-by", name)
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from(body)))
                        .expect("valid response"),
                )
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! One HTTP/1.1 request over loopback: directly to the server, and through a Weft proxy
//! (header match, subset, default retries, access log off), on kept-alive connections.
//! The ratio of the two is the proxy's added cost per request.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use weft_proxy::{Proxy, ProxyOptions};

const KIB: &[u8] = &[b'x'; 1024];

async fn server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        KIB,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (backend, proxy) = rt.block_on(async {
        let backend = server().await;
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut opts = ProxyOptions::istio_defaults(weft_proxy::workload::Workload { namespace: "default".into(), ..Default::default() });
        opts.bind_all(any);
        opts.access_log = weft_proxy::telemetry::access_log::AccessLog::Off;
        opts.orig_dst = Arc::new(weft_proxy::transport::orig_dst::NoOriginalDst);
        let proxy = Proxy::start(opts).await.unwrap();
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  selector: {{app: reviews}}\n  ports:\n  - {{name: http, port: 9080}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: r1\nspec:\n  address: 127.0.0.2\n  labels: {{app: reviews, version: v1}}\n  ports: {{http: {}}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - headers: {{end-user: {{exact: jason}}}}\n    route:\n    - destination: {{host: reviews, subset: v2}}\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n",
            backend.port()
        );
        let loaded = weft_api::load_str(&yaml, std::path::Path::new("bench.yaml"));
        proxy.config.apply(loaded.resources).await.unwrap();
        (backend, proxy)
    });
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |target: std::net::SocketAddr| {
        let client = client.clone();
        async move {
            let req = Request::builder()
                .uri(format!("http://{target}/reviews/0"))
                .header("host", "reviews:9080")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap().to_bytes().len()
        }
    };
    c.bench_function("1 KiB GET direct", |b| b.iter(|| rt.block_on(get(backend))));
    c.bench_function("1 KiB GET through weft proxy", |b| {
        b.iter(|| rt.block_on(get(proxy.outbound_addr)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

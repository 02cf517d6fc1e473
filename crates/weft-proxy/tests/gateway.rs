//! The ingress gateway: Istio's `Gateway` and the VirtualServices bound to it with
//! `gateways:`, on real sockets, modelled on Bookinfo's ingress; and Bookinfo's own
//! `bookinfo-gateway.yaml`, read from `../shared/istio-samples`, compiled unchanged.

mod support;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::Path;
use support::*;
use tokio::net::TcpStream;
use weft_api::types::OutboundTrafficMode;
use weft_api::Resource;
use weft_proxy::gateway::GatewayOptions;
use weft_proxy::model::matcher::RequestView;
use weft_proxy::model::route::{Action, Route};
use weft_proxy::model::{compile, VirtualHost};
use weft_proxy::telemetry::access_log::Flags;
use weft_proxy::workload::{parse_labels, Workload};

const PRODUCTPAGE_CLUSTER: &str = "outbound|9080||productpage.default.svc.cluster.local";

/// A Gateway named `name` selecting `istio: <selector>`, with an HTTP server for all hosts
/// on each port.
fn gateway(name: &str, selector: &str, ports: &[u16]) -> String {
    let mut out = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  selector:\n    istio: {selector}\n  servers:\n"
    );
    for port in ports {
        out.push_str(&format!(
            "  - port:\n      number: {port}\n      name: http-{port}\n      protocol: HTTP\n    hosts:\n    - \"*\"\n"
        ));
    }
    out + "---\n"
}

/// Bookinfo's ingress routes, bound to the Gateway `ingress` only.
const BOOKINFO_ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts: [\"*\"]
  gateways: [ingress]
  http:
  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    route:
    - destination:
        host: productpage
        port: {number: 9080}
---
";

struct Mesh {
    productpage: Backend,
    reviews: Backend,
}

impl Mesh {
    async fn start() -> Mesh {
        Mesh {
            productpage: Backend::start("127.0.0.2", "productpage", ok()).await,
            reviews: Backend::start("127.0.0.3", "reviews", ok()).await,
        }
    }

    /// The two services, and sidecar routes for reviews bound to no gateway.
    fn yaml(&self) -> String {
        service_yaml("productpage", 9080, &[("v1", &self.productpage)])
            + &service_yaml("reviews", 9080, &[("v1", &self.reviews)])
            + &reviews_routes("  - route:\n    - destination: {host: reviews}\n")
            + "---\n"
    }
}

async fn start_gateway(yaml: &str) -> TestProxy {
    let setup = Setup {
        labels: "istio=ingressgateway",
        gateway: Some(GatewayOptions {
            address: "127.0.0.1".parse().unwrap(),
        }),
        ..Setup::default()
    };
    TestProxy::start_with(yaml, setup).await
}

async fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect(addr)
        .await
        .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
}

/// A GET over HTTP/2 with prior knowledge (h2c): the status and who served it.
async fn h2c_get(addr: SocketAddr, authority: &str, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let served_by = resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    (status, served_by)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_port_routes_by_the_bound_virtual_service() {
    let mesh = Mesh::start().await;
    let port = free_port();
    let yaml = mesh.yaml() + &gateway("ingress", "ingressgateway", &[port]) + BOOKINFO_ROUTES;
    let mut proxy = start_gateway(&yaml).await;
    let listeners = proxy.gateway_listeners().await;
    assert_eq!(listeners.failed, BTreeMap::new());
    let addr = listeners.listening[&port];
    let gw = HttpClient::new(addr);

    let page = gw.get("bookinfo.example.com", "/productpage", &[]).await;
    assert_eq!(
        (page.status.as_u16(), page.served_by()),
        (200, "productpage")
    );
    assert_eq!(
        page.headers["server"], "istio-envoy",
        "Istio's gateway server name"
    );
    let entry = proxy.log.recv().await.unwrap();
    assert_eq!(entry.upstream_cluster.as_deref(), Some(PRODUCTPAGE_CLUSTER));
    assert_eq!(entry.downstream_local, Some(addr));
    assert_eq!(
        gw.served(&addr.to_string(), "/static/style.css", &[]).await,
        "productpage"
    );
    proxy.log.recv().await.unwrap();
    assert_eq!(
        h2c_get(addr, "bookinfo.example.com", "/productpage").await,
        (200, "productpage".to_string())
    );
    proxy.log.recv().await.unwrap();

    let unknown = gw.get("bookinfo.example.com", "/admin", &[]).await;
    assert_eq!(unknown.status, 404);
    let entry = proxy.log.recv().await.unwrap();
    assert_eq!((entry.status, entry.flags), (404, Flags::NR));

    // reviews' VirtualService binds no gateway: on the gateway its host is one more Host
    // under bookinfo's "*", where no route matches.
    let reviews = gw
        .get("reviews.default.svc.cluster.local", "/reviews/0", &[])
        .await;
    assert_eq!(reviews.status, 404);
    assert_eq!(mesh.reviews.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_no_virtual_service_names_gets_404_nr() {
    let mesh = Mesh::start().await;
    let port = free_port();
    let shop = BOOKINFO_ROUTES.replace("[\"*\"]", "[shop.example.com]");
    let yaml = mesh.yaml() + &gateway("ingress", "ingressgateway", &[port]) + &shop;
    let mut proxy = start_gateway(&yaml).await;
    let gw = HttpClient::new(proxy.gateway_listeners().await.listening[&port]);
    assert_eq!(
        gw.served("shop.example.com", "/productpage", &[]).await,
        "productpage"
    );
    proxy.log.recv().await.unwrap();
    let elsewhere = gw.get("other.example.com", "/productpage", &[]).await;
    assert_eq!(elsewhere.status, 404);
    assert!(elsewhere.headers.contains_key("x-weft-error"));
    assert_eq!(proxy.log.recv().await.unwrap().flags, Flags::NR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_service_bound_only_to_the_gateway_leaves_sidecars_alone() {
    let mesh = Mesh::start().await;
    let port = free_port();
    let yaml = mesh.yaml() + &gateway("ingress", "ingressgateway", &[port]) + BOOKINFO_ROUTES;
    let proxy = start_gateway(&yaml).await;
    proxy.gateway_listeners().await;
    // Applied to sidecars, bookinfo's `hosts: ["*"]` would claim every service and answer
    // these with 404.
    let sidecar = proxy.client();
    assert_eq!(
        sidecar.served("productpage:9080", "/anything", &[]).await,
        "productpage"
    );
    assert_eq!(
        sidecar.served("reviews:9080", "/reviews/0", &[]).await,
        "reviews"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_gateways_limit_a_route_to_the_gateway() {
    let mesh = Mesh::start().await;
    let port = free_port();
    let reviews_everywhere = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-everywhere
spec:
  hosts: [reviews]
  gateways: [default/ingress, mesh]
  http:
  - match:
    - gateways: [ingress]
    route:
    - destination: {host: productpage}
  - route:
    - destination: {host: reviews}
";
    let yaml = service_yaml("productpage", 9080, &[("v1", &mesh.productpage)])
        + &service_yaml("reviews", 9080, &[("v1", &mesh.reviews)])
        + &gateway("ingress", "ingressgateway", &[port])
        + reviews_everywhere;
    let proxy = start_gateway(&yaml).await;
    let gw = HttpClient::new(proxy.gateway_listeners().await.listening[&port]);
    assert_eq!(
        gw.served("reviews.default.svc.cluster.local", "/reviews/0", &[])
            .await,
        "productpage"
    );
    assert_eq!(
        proxy
            .client()
            .served("reviews:9080", "/reviews/0", &[])
            .await,
        "reviews"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_gateway_closes_its_listener() {
    let mesh = Mesh::start().await;
    let port = free_port();
    let with_gateway =
        mesh.yaml() + &gateway("ingress", "ingressgateway", &[port]) + BOOKINFO_ROUTES;
    let proxy = start_gateway(&with_gateway).await;
    let addr = proxy.gateway_listeners().await.listening[&port];
    assert_eq!(
        HttpClient::new(addr)
            .served("bookinfo.example.com", "/productpage", &[])
            .await,
        "productpage"
    );

    let status = proxy.reconfigure(&(mesh.yaml() + BOOKINFO_ROUTES)).await;
    assert_eq!(status.last_error, None);
    let listeners = proxy.gateway_listeners().await;
    assert!(listeners.listening.is_empty(), "{listeners:?}");
    assert!(refused(addr).await, "{addr} still accepts");

    proxy.reconfigure(&with_gateway).await;
    let addr = proxy.gateway_listeners().await.listening[&port];
    assert_eq!(
        HttpClient::new(addr)
            .served("bookinfo.example.com", "/productpage", &[])
            .await,
        "productpage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_selecting_other_labels_opens_nothing() {
    let mesh = Mesh::start().await;
    let port = free_port();
    let yaml = mesh.yaml()
        + &gateway("egress", "egressgateway", &[port])
        + &BOOKINFO_ROUTES.replace("[ingress]", "[egress]");
    let proxy = start_gateway(&yaml).await;
    let listeners = proxy.gateway_listeners().await;
    assert!(
        listeners.listening.is_empty() && listeners.failed.is_empty(),
        "{listeners:?}"
    );
    assert!(refused(SocketAddr::from(([127, 0, 0, 1], port))).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_cannot_be_bound_is_reported_and_the_others_serve() {
    let mesh = Mesh::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let port = free_port();
    let yaml = mesh.yaml() + &gateway("ingress", "ingressgateway", &[busy, port]) + BOOKINFO_ROUTES;
    let proxy = start_gateway(&yaml).await;
    let listeners = proxy.gateway_listeners().await;
    let why = &listeners.failed[&busy];
    assert!(
        why.contains(&format!("127.0.0.1:{busy}")) && why.contains("another process"),
        "{why}"
    );
    assert_eq!(
        HttpClient::new(listeners.listening[&port])
            .served("bookinfo.example.com", "/productpage", &[])
            .await,
        "productpage"
    );
}

const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio-samples/bookinfo"
);

fn load_sample(relative: &str) -> Vec<Resource> {
    let path = Path::new(SAMPLES).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read Istio sample {}: {e}\nthese tests need istio-samples checked out at ../shared beside the repository",
            path.display()
        )
    });
    let loaded = weft_api::load_str(&text, &path);
    let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    loaded.resources
}

fn workload(namespace: &str, labels: &str) -> Workload {
    Workload {
        namespace: namespace.into(),
        labels: parse_labels(labels).unwrap(),
        ..Workload::default()
    }
}

fn route_for<'a>(vhost: &'a VirtualHost, path: &str) -> Option<&'a Route> {
    let headers = HeaderMap::new();
    let view = RequestView::new(
        &Method::GET,
        path,
        "http",
        "bookinfo.example.com",
        &headers,
        8080,
    );
    vhost.route_for(&view).map(|(route, _)| route)
}

#[test]
fn bookinfo_gateway_sample_compiles_unchanged() {
    let mut resources = load_sample("platform/bookinfo.yaml");
    resources.extend(load_sample("networking/bookinfo-gateway.yaml"));
    let compile_for = |w: &Workload| {
        compile(
            resources.clone(),
            w,
            OutboundTrafficMode::RegistryOnly,
            1,
            &BTreeMap::new(),
        )
        .unwrap()
    };

    let ingress = compile_for(&workload(
        "istio-system",
        "app=istio-ingressgateway,istio=ingressgateway",
    ));
    assert_eq!(
        ingress.gateway_ports.keys().collect::<Vec<_>>(),
        vec![&8080],
        "one HTTP server on 8080"
    );
    let vhost = ingress.gateway_ports[&8080]
        .http_routes(None)
        .expect("a plaintext HTTP port")
        .find("bookinfo.example.com:8080")
        .expect("hosts \"*\" serve any Host");
    assert_eq!(
        vhost.virtual_service.as_deref(),
        Some("VirtualService default/bookinfo")
    );
    for path in [
        "/productpage",
        "/static/css/style.css",
        "/login",
        "/logout",
        "/api/v1/products/0/reviews",
    ] {
        let route = route_for(vhost, path).unwrap_or_else(|| panic!("{path} has no route"));
        let Action::Forward(to) = &route.action else {
            panic!("{path} is not forwarded");
        };
        let cluster = &to.clusters[0].cluster.config;
        assert_eq!(cluster.name, PRODUCTPAGE_CLUSTER, "{path}");
        assert_eq!(cluster.unusable, None, "{path}");
    }
    assert!(route_for(vhost, "/admin").is_none());
    assert!(route_for(vhost, "/productpage/extra").is_none());

    let sidecar = compile_for(&workload("default", "app=productpage,version=v1"));
    assert!(sidecar.gateway_ports.is_empty());
    let productpage = sidecar
        .virtual_host(9080, "productpage:9080", None)
        .unwrap();
    assert_eq!(
        productpage.virtual_service, None,
        "the gateway's VirtualService does not bind sidecars"
    );
}

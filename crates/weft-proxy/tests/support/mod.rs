//! Real servers, real proxies, real sockets on 127.0.0.x for the integration tests.
#![allow(dead_code)]

pub mod mesh;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_proxy::config::FileSource;
use weft_proxy::gateway::{GatewayListeners, GatewayOptions};
use weft_proxy::telemetry::access_log::{AccessLog, Entry};
use weft_proxy::transport::orig_dst::{NoOriginalDst, OriginalDst};
use weft_proxy::workload::{parse_labels, Workload};
use weft_proxy::{Proxy, ProxyOptions};

/// How a backend answers the n-th request (0-based).
pub type Behaviour = Arc<dyn Fn(usize) -> (u16, Option<Duration>) + Send + Sync>;

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn ok() -> Behaviour {
    Arc::new(|_| (200, None))
}

/// An HTTP/1.1 + HTTP/2 server that names itself in `x-served-by` and echoes what it saw.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// The most requests any one connection carried.
    pub most_per_connection: Arc<AtomicUsize>,
    pub seen: Arc<std::sync::Mutex<Vec<http::request::Parts>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub async fn start(ip: &str, name: &'static str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let most_per_connection = Arc::new(AtomicUsize::new(0));
        let (h, s, accepted, most) = (
            hits.clone(),
            seen.clone(),
            connections.clone(),
            most_per_connection.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (h, s, behaviour, most) =
                    (h.clone(), s.clone(), behaviour.clone(), most.clone());
                let on_this_connection = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (h, s, behaviour) = (h.clone(), s.clone(), behaviour.clone());
                        let carried = on_this_connection.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(carried, Ordering::SeqCst);
                        async move {
                            let n = h.fetch_add(1, Ordering::SeqCst);
                            let (status, delay) = behaviour(n);
                            if let Some(d) = delay {
                                tokio::time::sleep(d).await;
                            }
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let path = parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let host = parts
                                .headers
                                .get("host")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            s.lock().unwrap().push(parts);
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("x-served-by", name)
                                    .header("x-seen-path", path)
                                    .header("x-seen-host", host)
                                    .header("x-seen-body-len", body.len())
                                    .body(Full::new(Bytes::from(name)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            hits,
            connections,
            most_per_connection,
            seen,
            task,
        }
    }
}

/// A config directory the proxy watches.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        ConfigDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes a file atomically (write, rename) so the watcher never reads half of it.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }
}

pub struct TestProxy {
    pub proxy: Proxy,
    pub config: ConfigDir,
    pub log: tokio::sync::mpsc::UnboundedReceiver<Entry>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

pub struct Setup {
    pub labels: &'static str,
    pub allow_any: bool,
    pub orig_dst: Arc<dyn OriginalDst>,
    /// Gateway mode: listen on the ports of the Gateway servers that select `labels`.
    pub gateway: Option<GatewayOptions>,
    pub server_header: weft_proxy::ServerHeader,
    /// Where inbound connections without an original destination go.
    pub inbound_target: Option<SocketAddr>,
    /// The app's metrics, merged into 15020's.
    pub app_metrics: Option<weft_proxy::admin::AppMetrics>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            labels: "app=productpage,version=v1",
            allow_any: false,
            orig_dst: Arc::new(NoOriginalDst),
            gateway: None,
            server_header: Default::default(),
            inbound_target: None,
            app_metrics: None,
        }
    }
}

impl TestProxy {
    pub async fn start(yaml: &str) -> TestProxy {
        TestProxy::start_with(yaml, Setup::default()).await
    }

    pub async fn start_with(yaml: &str, setup: Setup) -> TestProxy {
        TestProxy::start_on(yaml, setup, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts with the outbound listener on `outbound` (15001 for capture tests).
    pub async fn start_on(yaml: &str, setup: Setup, outbound: SocketAddr) -> TestProxy {
        let config = ConfigDir::new();
        config.write("mesh.yaml", yaml);
        let (tx, log) = tokio::sync::mpsc::unbounded_channel();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut opts = ProxyOptions::istio_defaults(Workload {
            name: "productpage-v1".into(),
            namespace: "default".into(),
            labels: parse_labels(setup.labels).unwrap(),
            service_account: "bookinfo-productpage".into(),
            ..Workload::default()
        });
        opts.bind_all(any);
        opts.outbound = outbound;
        opts.access_log = AccessLog::Channel(tx);
        opts.orig_dst = setup.orig_dst;
        opts.gateway = setup.gateway;
        opts.server_header = setup.server_header;
        opts.inbound_target = setup.inbound_target;
        opts.app_metrics = setup.app_metrics;
        if setup.allow_any {
            opts.outbound_policy = weft_api::types::OutboundTrafficMode::AllowAny;
        }
        let proxy = Proxy::start(opts).await.expect("proxy starts");
        let mut status = proxy.config.subscribe();
        let source = FileSource {
            dir: config.dir.path().to_path_buf(),
        };
        let store = proxy.config.clone();
        let watcher = tokio::spawn(async move {
            let _ = source.run(store).await;
        });
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.version > 0 || s.rejected > 0),
        )
        .await
        .expect("config loads in time")
        .unwrap();
        assert_eq!(
            proxy.config.status().last_error,
            None,
            "initial config rejected"
        );
        TestProxy {
            proxy,
            config,
            log,
            watcher,
        }
    }

    /// Replaces the config and waits until the proxy applied (or rejected) it.
    pub async fn reconfigure(&self, yaml: &str) -> weft_proxy::config::ConfigStatus {
        let before = self.proxy.config.status();
        let mut status = self.proxy.config.subscribe();
        self.config.write("mesh.yaml", yaml);
        let after = tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.version > before.version || s.rejected > before.rejected),
        )
        .await
        .expect("reload acknowledged in time")
        .unwrap()
        .clone();
        after
    }

    /// Gateway mode: the listeners, once they reflect the config version being served.
    pub async fn gateway_listeners(&self) -> GatewayListeners {
        let mut status = self.proxy.config.subscribe();
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.gateway.as_ref().is_some_and(|g| g.version == s.version)),
        )
        .await
        .expect("gateway listeners follow the config in time")
        .unwrap()
        .clone();
        status.gateway.expect("gateway mode")
    }

    pub fn client(&self) -> HttpClient {
        HttpClient::new(self.proxy.outbound_addr)
    }
}

/// Sends requests through a proxy's outbound port with a Host header, as an app configured
/// with the proxy as its HTTP proxy would.
#[derive(Clone)]
pub struct HttpClient {
    pub proxy: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn served_by(&self) -> &str {
        self.headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The proxy's `x-weft-error` hint, or "" without one.
    pub fn hint(&self) -> String {
        self.headers
            .get("x-weft-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

impl HttpClient {
    pub fn new(proxy: SocketAddr) -> HttpClient {
        let client = Client::builder(TokioExecutor::new()).build_http();
        HttpClient { proxy, client }
    }

    /// Which backend answered a GET.
    pub async fn served(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        self.get(host, path, headers).await.served_by().to_string()
    }

    pub async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("GET", host, path, headers, Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.proxy, path))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .expect("proxy answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A Service plus one WorkloadEntry per (version, backend), all in `default`.
pub fn service_yaml(name: &str, port: u16, endpoints: &[(&str, &Backend)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: {port}\n---\n"
    );
    for (version, backend) in endpoints {
        out.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}-{version}-{p}\nspec:\n  address: {ip}\n  labels:\n    app: {name}\n    version: {version}\n  ports:\n    http: {p}\n---\n",
            ip = backend.addr.ip(),
            p = backend.addr.port()
        ));
    }
    out
}

pub fn subsets_yaml(name: &str, versions: &[&str], policy: &str) -> String {
    let mut out = format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\nspec:\n  host: {name}\n{policy}  subsets:\n");
    for v in versions {
        out.push_str(&format!("  - name: {v}\n    labels:\n      version: {v}\n"));
    }
    out.push_str("---\n");
    out
}

/// Counts how many of `answers` each backend served.
pub fn tally<'a>(
    answers: impl IntoIterator<Item = &'a Answer>,
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for a in answers {
        *m.entry(a.served_by().to_string()).or_insert(0) += 1;
    }
    m
}

/// A VirtualService named for `host` (hosts `[host]`) with the given `http:` entries.
pub fn virtual_service(host: &str, http: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {host}\nspec:\n  hosts: [{host}]\n  http:\n{http}")
}

pub fn reviews_routes(http: &str) -> String {
    virtual_service("reviews", http)
}

// ---------------------------------------------------------------------------------------------
// Metrics: a proxy's /stats/prometheus, read as a scraper reads it

pub async fn scrape(addr: SocketAddr) -> String {
    let a = HttpClient::new(addr)
        .get(&addr.to_string(), "/stats/prometheus", &[])
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.text()
}

/// The value of the one sample of `metric` that has every label of `labels`.
pub fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once("} "),
                None => Some(("", rest.strip_prefix(' ')?)),
            }
        })
        .filter(|(set, _)| {
            labels
                .iter()
                .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse().expect("a number"))
        .collect();
    assert!(found.len() <= 1, "{metric} {labels:?} matches {found:?}");
    found.first().copied()
}

/// Scrapes until `metric{labels}` equals `want` (metrics are written when the response
/// body or connection ends, after the caller may have seen it), or fails after 10 s.
pub async fn wait_for(
    addr: SocketAddr,
    metric: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr).await;
        if sample(&text, metric, labels) == Some(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{metric} {labels:?} never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sidecar for `workload` whose inbound side hands requests to `app`, with `yaml` as its
/// config, and its access log.
pub async fn inbound_sidecar_with(
    workload: Workload,
    app: SocketAddr,
    yaml: &str,
) -> (Proxy, tokio::sync::mpsc::UnboundedReceiver<Entry>) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut opts = ProxyOptions::istio_defaults(workload);
    opts.bind_all(any);
    opts.inbound_target = Some(app);
    let (tx, log) = tokio::sync::mpsc::unbounded_channel();
    opts.access_log = AccessLog::Channel(tx);
    opts.orig_dst = Arc::new(NoOriginalDst);
    let proxy = Proxy::start(opts).await.unwrap();
    // A proxy serves once it has a config, even an empty one.
    let loaded = weft_api::load_str(yaml, std::path::Path::new("inbound.yaml"));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    proxy.config.apply(loaded.resources).await.unwrap();
    (proxy, log)
}

/// [`inbound_sidecar_with`] an empty config.
pub async fn inbound_sidecar(
    workload: Workload,
    app: SocketAddr,
) -> (Proxy, tokio::sync::mpsc::UnboundedReceiver<Entry>) {
    inbound_sidecar_with(workload, app, "").await
}

pub fn reviews_v3() -> Workload {
    Workload {
        name: "reviews-v3".into(),
        pod: "reviews-v3-0".into(),
        namespace: "default".into(),
        labels: parse_labels("app=reviews,version=v3").unwrap(),
        service_account: "bookinfo-reviews".into(),
        instance_ip: "127.0.0.1".into(),
    }
}

/// Echoes what it reads until the caller closes.
pub async fn tcp_echo(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Runs test `name` of this test binary again inside fresh namespaces (`unshare` with
/// `namespaces`, as a user namespace's root), with `CHILD` set in its environment and
/// `env` added; fails the calling test, saying what it `needs`, unless the child passed.
pub fn in_namespaces(
    name: &str,
    namespaces: &[&str],
    child: &str,
    env: &[(&str, &std::ffi::OsStr)],
    needs: &str,
) {
    let exe = std::env::current_exe().unwrap();
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--user", "--map-root-user"])
        .args(namespaces)
        .arg("--")
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(child, "1");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command
        .output()
        .expect("`unshare` (util-linux) must be installed for the namespace tests");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} failed inside its namespace (it needs {needs}):\n{stdout}\n{stderr}"
    );
}

//! Sidecar pairs with certificates from a test CA, for the mTLS and authorization tests:
//! productpage's sidecar calling reviews' sidecar in front of an app.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::identity::Certificates;
use weft_proxy::telemetry::access_log::{AccessLog, Entry};
use weft_proxy::transport::orig_dst::NoOriginalDst;
use weft_proxy::workload::{parse_labels, Workload};
use weft_proxy::{Proxy, ProxyOptions};
use weft_security::ca::Ca;
use weft_security::workload::WorkloadKey;
use weft_security::Identity;

pub const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
pub const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

pub fn workload(name: &str, app: &str, sa: &str) -> Workload {
    Workload {
        name: name.into(),
        pod: format!("{name}-0"),
        namespace: "default".into(),
        labels: parse_labels(&format!("app={app},version=v1")).unwrap(),
        service_account: sa.into(),
        instance_ip: String::new(),
    }
}

pub fn ca() -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
    (dir, ca)
}

/// A certificate from `ca` for `sa`, valid for `ttl`, trusting `root_pem`.
pub fn certificates(ca: &Ca, sa: &str, ttl: Duration, root_pem: &str) -> Certificates {
    let id = Identity::new("cluster.local", "default", sa).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let chain = ca.sign(&key.csr(&id).unwrap(), &id, ttl).unwrap();
    let presented = chain[..chain.len() - 1].concat();
    Certificates::fixed(&presented, &key.private_key_pem(), root_pem, id).unwrap()
}

pub fn day() -> Duration {
    Duration::from_secs(86_400)
}

pub struct Sidecar {
    pub proxy: Proxy,
    pub log: tokio::sync::mpsc::UnboundedReceiver<Entry>,
}

impl Sidecar {
    pub async fn start(
        workload: Workload,
        certificates: Option<Certificates>,
        app: Option<SocketAddr>,
        yaml: &str,
    ) -> Sidecar {
        let mut opts = ProxyOptions::istio_defaults(workload);
        opts.bind_all("127.0.0.1:0".parse().unwrap());
        opts.inbound_target = app;
        opts.orig_dst = Arc::new(NoOriginalDst);
        opts.certificates = certificates;
        let (tx, log) = tokio::sync::mpsc::unbounded_channel();
        opts.access_log = AccessLog::Channel(tx);
        let proxy = Proxy::start(opts).await.unwrap();
        let loaded = weft_api::load_str(yaml, std::path::Path::new("mesh.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        proxy.config.apply(loaded.resources).await.unwrap();
        Sidecar { proxy, log }
    }

    pub async fn next_log(&mut self) -> Entry {
        tokio::time::timeout(Duration::from_secs(10), self.log.recv())
            .await
            .expect("an access-log entry in time")
            .expect("the log is open")
    }
}

/// `reviews` on port 9080 with one endpoint: the server sidecar's inbound port, labelled as
/// having a sidecar when `sidecar`, running as `sa`; `protocol` names the port.
pub fn reviews_yaml(inbound: SocketAddr, sidecar: bool, sa: &str, protocol: &str) -> String {
    let tls_mode = if sidecar {
        "\n    security.istio.io/tlsMode: istio"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  selector:\n    app: reviews\n  ports:\n  - name: {protocol}\n    port: 9080\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: reviews-v1\nspec:\n  address: {ip}\n  serviceAccount: {sa}\n  labels:\n    app: reviews\n    version: v1{tls_mode}\n  ports:\n    {protocol}: {port}\n",
        ip = inbound.ip(),
        port = inbound.port(),
    )
}

/// A pair: productpage's sidecar calling reviews' sidecar in front of `app`; both sidecars
/// hold `policies` (PeerAuthentications).
pub async fn pair(
    client_certs: Option<Certificates>,
    server_certs: Option<Certificates>,
    app: SocketAddr,
    mesh: impl Fn(SocketAddr) -> String,
    policies: &str,
) -> (Sidecar, Sidecar) {
    let server = Sidecar::start(
        workload("reviews-v1", "reviews", "bookinfo-reviews"),
        server_certs,
        Some(app),
        policies,
    )
    .await;
    let client = Sidecar::start(
        workload("productpage-v1", "productpage", "bookinfo-productpage"),
        client_certs,
        None,
        &format!("{}---\n{policies}", mesh(server.proxy.inbound_addr)),
    )
    .await;
    (client, server)
}

/// A pair whose certificates `ca` signed for productpage and for `server_sa`; the mesh file
/// says reviews runs as bookinfo-reviews, with a sidecar when `sidecar`, on `protocol`.
pub async fn signed_pair(
    ca: &Ca,
    server_sa: &str,
    app: SocketAddr,
    sidecar: bool,
    protocol: &'static str,
) -> (Sidecar, Sidecar) {
    let root = ca.root_pem();
    pair(
        Some(certificates(ca, "bookinfo-productpage", day(), root)),
        Some(certificates(ca, server_sa, day(), root)),
        app,
        |inbound| reviews_yaml(inbound, sidecar, "bookinfo-reviews", protocol),
        "",
    )
    .await
}

/// A pair like [`signed_pair`] (reviews has a sidecar, port `http`) under `policies`.
pub async fn pair_under(ca: &Ca, app: SocketAddr, policies: &str) -> (Sidecar, Sidecar) {
    let root = ca.root_pem();
    pair(
        Some(certificates(ca, "bookinfo-productpage", day(), root)),
        Some(certificates(ca, "bookinfo-reviews", day(), root)),
        app,
        |inbound| reviews_yaml(inbound, true, "bookinfo-reviews", "http"),
        policies,
    )
    .await
}

pub fn peer_authentication(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}\n---\n"
    )
}

/// A plaintext HTTP request straight to a sidecar's inbound port, as a client outside the
/// mesh sends it: the status line, or the error that ended the connection.
pub async fn plaintext_request(inbound: SocketAddr) -> Result<String, std::io::ErrorKind> {
    let mut s = tokio::net::TcpStream::connect(inbound)
        .await
        .map_err(|e| e.kind())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
        .await
        .map_err(|e| e.kind())?;
    let mut head = vec![0u8; 512];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut head)).await {
        Err(_) => panic!("no answer and no close from {inbound}"),
        Ok(Err(e)) => Err(e.kind()),
        Ok(Ok(0)) => Err(std::io::ErrorKind::UnexpectedEof),
        Ok(Ok(n)) => Ok(String::from_utf8_lossy(&head[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()),
    }
}

/// A CONNECT tunnel through `client`'s outbound port to reviews:9080, as an explicit-proxy
/// TCP client opens one; the proxy's answer must be 200.
pub async fn tunnel_to_reviews(client: &Sidecar) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(client.proxy.outbound_addr)
        .await
        .unwrap();
    s.write_all(b"CONNECT reviews:9080 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 256];
    let n = s.read(&mut head).await.unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    s
}

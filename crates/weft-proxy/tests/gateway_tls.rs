//! Gateway TLS on real sockets, as Istio's "Secure Gateways" and "Ingress Gateway without
//! TLS Termination" tasks use it: HTTPS servers terminating with the Secrets their
//! `credentialName` names (picked by SNI, one certificate per host), MUTUAL requiring a
//! client certificate from the Secret's CA, `httpsRedirect`, PASSTHROUGH routed by SNI to a
//! server that keeps its own certificate, TCP servers, and a credential that arrives after
//! the Gateway.

mod support;

use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_proxy::gateway::GatewayOptions;
use weft_security::ca::Ca;

/// A CA (Istio's task makes `example.com`'s) and what it signs.
struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
        Pki { _dir: dir, ca }
    }

    /// A certificate chain and key for `name`.
    fn issue(&self, name: &str) -> (String, String) {
        let (chain, key) = self.ca.serving(&[name], Duration::from_secs(3600)).unwrap();
        (chain.concat(), key)
    }

    fn root(&self) -> &str {
        self.ca.root_pem()
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `kubectl create secret tls NAME --cert --key`, as YAML.
fn tls_secret(name: &str, (chain, key): &(String, String)) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
        b64(chain),
        b64(key)
    )
}

/// `kubectl create secret generic NAME --from-file=tls.key --from-file=tls.crt
/// --from-file=ca.crt`, as YAML.
fn mutual_secret(name: &str, (chain, key): &(String, String), ca: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n---\n",
        b64(chain),
        b64(key),
        b64(ca)
    )
}

/// A Gateway with these servers (YAML list items), selecting the test gateway.
fn gateway(servers: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: mygateway}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}---\n")
}

fn https_server(port: u16, name: &str, host: &str, tls: &str) -> String {
    format!("  - port: {{number: {port}, name: {name}, protocol: HTTPS}}\n    hosts: [{host}]\n    tls: {tls}\n")
}

/// Istio's task routes each host to its service through the Gateway.
fn routes(host: &str, service: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {service}}}\nspec:\n  hosts: [{host}]\n  gateways: [mygateway]\n  http:\n  - route:\n    - destination: {{host: {service}, port: {{number: 9080}}}}\n---\n")
}

async fn start_gateway(yaml: &str) -> TestProxy {
    TestProxy::start_with(
        yaml,
        Setup {
            labels: "istio=ingressgateway",
            gateway: Some(GatewayOptions {
                address: "127.0.0.1".parse().unwrap(),
            }),
            ..Setup::default()
        },
    )
    .await
}

/// A gateway serving `yaml(port)`, and the port's address. A port found free can be taken
/// before the gateway binds it (another test's connection may use it as its source port),
/// so a port that fails to bind is replaced, saying why.
async fn gateway_on_a_free_port(yaml: impl Fn(u16) -> String) -> (TestProxy, SocketAddr) {
    let mut why = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let proxy = start_gateway(&yaml(port)).await;
        let listeners = proxy.gateway_listeners().await;
        if let Some(addr) = listeners.listening.get(&port) {
            return (proxy, *addr);
        }
        why.push(format!("{port}: {:?}", listeners.failed.get(&port)));
    }
    panic!("no gateway port could be bound: {why:?}");
}

/// The client side: trusts `root`, shows `client` if given.
fn client_config(root: &str, client: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// `curl --resolve HOST:PORT:127.0.0.1 --cacert ROOT https://HOST:PORT/PATH`: the status,
/// who served it, and the `x-forwarded-proto` the backend saw (it echoes it).
async fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let served = resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let _ = resp.into_body().collect().await;
    Ok((status, served))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_servers_terminate_with_the_secret_for_each_host() {
    let pki = Pki::new();
    let httpbin = Backend::start("127.0.0.2", "httpbin", ok()).await;
    let helloworld = Backend::start("127.0.0.3", "helloworld", ok()).await;
    let port = free_port();
    let httpbin_credential = pki.issue("httpbin.example.com");
    let yaml = service_yaml("httpbin", 9080, &[("v1", &httpbin)])
        + &service_yaml("helloworld", 9080, &[("v1", &helloworld)])
        + &tls_secret("httpbin-credential", &httpbin_credential)
        + &tls_secret(
            "helloworld-credential",
            &pki.issue("helloworld.example.com"),
        )
        + &gateway(
            &(https_server(
                port,
                "https-httpbin",
                "httpbin.example.com",
                "{mode: SIMPLE, credentialName: httpbin-credential}",
            ) + &https_server(
                port,
                "https-helloworld",
                "helloworld.example.com",
                "{mode: SIMPLE, credentialName: helloworld-credential}",
            )),
        )
        + &routes("httpbin.example.com", "httpbin")
        + &routes("helloworld.example.com", "helloworld");
    let proxy = start_gateway(&yaml).await;
    let addr = proxy.gateway_listeners().await.listening[&port];
    let trusting = client_config(pki.root(), None);

    // Each host's certificate is shown for its SNI (the client checks the name), and its
    // routes serve it.
    assert_eq!(
        https_get(addr, trusting.clone(), "httpbin.example.com", "/status/418").await,
        Ok((200, "httpbin".into()))
    );
    assert_eq!(
        https_get(addr, trusting.clone(), "helloworld.example.com", "/hello").await,
        Ok((200, "helloworld".into()))
    );
    // The backend learns the request came over https.
    let seen = httpbin.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // A name no server has gets no handshake; a client that does not trust the CA refuses.
    let unknown = https_get(addr, trusting.clone(), "other.example.com", "/").await;
    assert!(unknown.is_err(), "{unknown:?}");
    let stranger = Pki::new();
    let distrusting = https_get(
        addr,
        client_config(stranger.root(), None),
        "httpbin.example.com",
        "/",
    )
    .await;
    assert!(
        distrusting
            .as_ref()
            .is_err_and(|e| e.contains("certificate")),
        "{distrusting:?}"
    );

    // The config dump names where each server's credential came from, and never its bytes.
    let dump = HttpClient::new(proxy.proxy.admin_addr)
        .get(&proxy.proxy.admin_addr.to_string(), "/config_dump", &[])
        .await
        .text();
    assert!(
        dump.contains("Secret default/httpbin-credential") && dump.contains("[redacted]"),
        "{dump}"
    );
    assert!(!dump.contains("PRIVATE KEY") && !dump.contains(&b64(&httpbin_credential.1)[..40]));
}

/// `connection.sni` reads the ClientHello the gateway terminated, for HTTP requests as for
/// TCP connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_reads_the_sni_of_the_tls_the_gateway_terminates() {
    let pki = Pki::new();
    let httpbin = Backend::start("127.0.0.2", "httpbin", ok()).await;
    let deny = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-helloworld}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  action: DENY\n  rules:\n  - when:\n    - key: connection.sni\n      values: [helloworld.example.com]\n---\n";
    let (proxy, addr) = gateway_on_a_free_port(|port| {
        service_yaml("httpbin", 9080, &[("v1", &httpbin)])
            + &tls_secret("credential", &pki.issue("*.example.com"))
            + &gateway(&https_server(
                port,
                "https",
                "\"*.example.com\"",
                "{mode: SIMPLE, credentialName: credential}",
            ))
            + &routes("\"*.example.com\"", "httpbin")
            + deny
    })
    .await;
    let trusting = client_config(pki.root(), None);
    assert_eq!(
        https_get(addr, trusting.clone(), "httpbin.example.com", "/").await,
        Ok((200, "httpbin".into()))
    );
    assert_eq!(
        https_get(addr, trusting, "helloworld.example.com", "/").await,
        Ok((403, String::new()))
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_requires_a_client_certificate_from_the_secrets_ca() {
    let pki = Pki::new();
    let httpbin = Backend::start("127.0.0.2", "httpbin", ok()).await;
    let port = free_port();
    let yaml = service_yaml("httpbin", 9080, &[("v1", &httpbin)])
        + &mutual_secret(
            "httpbin-credential",
            &pki.issue("httpbin.example.com"),
            pki.root(),
        )
        + &gateway(&https_server(
            port,
            "https",
            "httpbin.example.com",
            "{mode: MUTUAL, credentialName: httpbin-credential}",
        ))
        + &routes("httpbin.example.com", "httpbin");
    let proxy = start_gateway(&yaml).await;
    let addr = proxy.gateway_listeners().await.listening[&port];

    // Istio's task: without a client certificate the handshake fails.
    let without = https_get(
        addr,
        client_config(pki.root(), None),
        "httpbin.example.com",
        "/status/418",
    )
    .await;
    assert!(without.is_err(), "{without:?}");
    let client = pki.issue("client.example.com");
    assert_eq!(
        https_get(
            addr,
            client_config(pki.root(), Some(&client)),
            "httpbin.example.com",
            "/status/418"
        )
        .await,
        Ok((200, "httpbin".into()))
    );
    // A client certificate from another CA is refused.
    let stranger = Pki::new().issue("client.example.com");
    let foreign = https_get(
        addr,
        client_config(pki.root(), Some(&stranger)),
        "httpbin.example.com",
        "/",
    )
    .await;
    assert!(foreign.is_err(), "{foreign:?}");

    // subjectAltNames limits which client certificates are taken.
    let limited = yaml.replace(
        "{mode: MUTUAL, credentialName: httpbin-credential}",
        "{mode: MUTUAL, credentialName: httpbin-credential, subjectAltNames: [trusted.example.com]}",
    );
    assert_eq!(proxy.reconfigure(&limited).await.last_error, None);
    let other_name = https_get(
        addr,
        client_config(pki.root(), Some(&client)),
        "httpbin.example.com",
        "/",
    )
    .await;
    assert!(other_name.is_err(), "{other_name:?}");
    let trusted = pki.issue("trusted.example.com");
    assert_eq!(
        https_get(
            addr,
            client_config(pki.root(), Some(&trusted)),
            "httpbin.example.com",
            "/"
        )
        .await,
        Ok((200, "httpbin".into()))
    );

    // caCertCredentialName wins over the credential's own ca.crt.
    let other_ca = Pki::new();
    let separate = yaml.replace(
        "{mode: MUTUAL, credentialName: httpbin-credential}",
        "{mode: MUTUAL, credentialName: httpbin-credential, caCertCredentialName: client-ca}",
    ) + &format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: client-ca}}\ndata:\n  ca.crt: {}\n---\n",
        b64(other_ca.root())
    );
    assert_eq!(proxy.reconfigure(&separate).await.last_error, None);
    let by_secret_ca = https_get(
        addr,
        client_config(pki.root(), Some(&client)),
        "httpbin.example.com",
        "/",
    )
    .await;
    assert!(by_secret_ca.is_err(), "{by_secret_ca:?}");
    assert_eq!(
        https_get(
            addr,
            client_config(pki.root(), Some(&other_ca.issue("client.example.com"))),
            "httpbin.example.com",
            "/"
        )
        .await,
        Ok((200, "httpbin".into()))
    );

    // A check Weft does not make refuses every handshake rather than letting clients in
    // unchecked, and the config dump says why.
    let pinned = yaml.replace(
        "{mode: MUTUAL, credentialName: httpbin-credential}",
        "{mode: MUTUAL, credentialName: httpbin-credential, verifyCertificateSpki: [abc]}",
    );
    assert_eq!(proxy.reconfigure(&pinned).await.last_error, None);
    let unchecked = https_get(
        addr,
        client_config(pki.root(), Some(&client)),
        "httpbin.example.com",
        "/",
    )
    .await;
    assert!(unchecked.is_err(), "{unchecked:?}");
    let dump = HttpClient::new(proxy.proxy.admin_addr)
        .get(&proxy.proxy.admin_addr.to_string(), "/config_dump", &[])
        .await
        .text();
    assert!(
        dump.contains("verifyCertificateSpki is not implemented"),
        "{dump}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_that_arrives_later_takes_effect_without_touching_the_gateway() {
    let pki = Pki::new();
    let httpbin = Backend::start("127.0.0.2", "httpbin", ok()).await;
    let port = free_port();
    let without_secret = service_yaml("httpbin", 9080, &[("v1", &httpbin)])
        + &gateway(&https_server(
            port,
            "https",
            "httpbin.example.com",
            "{mode: SIMPLE, credentialName: httpbin-credential}",
        ))
        + &routes("httpbin.example.com", "httpbin");
    let proxy = start_gateway(&without_secret).await;
    let addr = proxy.gateway_listeners().await.listening[&port];
    let trusting = client_config(pki.root(), None);
    let refused = https_get(addr, trusting.clone(), "httpbin.example.com", "/").await;
    assert!(refused.is_err(), "{refused:?}");
    // The config dump says why.
    let dump = HttpClient::new(proxy.proxy.admin_addr)
        .get(&proxy.proxy.admin_addr.to_string(), "/config_dump", &[])
        .await
        .text();
    assert!(
        dump.contains("no Secret default/httpbin-credential")
            && dump.contains("weft create secret tls"),
        "{dump}"
    );

    let with_secret = without_secret.clone()
        + &tls_secret("httpbin-credential", &pki.issue("httpbin.example.com"));
    assert_eq!(proxy.reconfigure(&with_secret).await.last_error, None);
    assert_eq!(
        https_get(addr, trusting, "httpbin.example.com", "/").await,
        Ok((200, "httpbin".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirect_sends_plaintext_to_https() {
    let httpbin = Backend::start("127.0.0.2", "httpbin", ok()).await;
    let port = free_port();
    let yaml = service_yaml("httpbin", 9080, &[("v1", &httpbin)])
        + &gateway(&format!(
            "  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: [httpbin.example.com, other.example.com]\n    tls: {{httpsRedirect: true}}\n"
        ))
        + &routes("httpbin.example.com", "httpbin");
    let proxy = start_gateway(&yaml).await;
    let addr = proxy.gateway_listeners().await.listening[&port];
    let client = HttpClient::new(addr);
    let answer = client
        .get("httpbin.example.com", "/status/418?x=1", &[])
        .await;
    assert_eq!(answer.status, 301);
    assert_eq!(
        answer.headers["location"],
        "https://httpbin.example.com/status/418?x=1"
    );
    assert_eq!(httpbin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A host of the server that no VirtualService names is redirected too, as in Istio.
    let answer = client.get("other.example.com:80", "/", &[]).await;
    assert_eq!(answer.status, 301);
    assert_eq!(answer.headers["location"], "https://other.example.com/");

    // Under a `*` server, the host a VirtualService names is redirected too.
    let wildcard = yaml.replace(
        "hosts: [httpbin.example.com, other.example.com]",
        "hosts: ['*']",
    );
    assert_eq!(proxy.reconfigure(&wildcard).await.last_error, None);
    let answer = client.get("httpbin.example.com", "/", &[]).await;
    assert_eq!(answer.status, 301);
    assert_eq!(answer.headers["location"], "https://httpbin.example.com/");
    assert_eq!(httpbin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A TLS server with its own certificate that answers one line: who it is.
async fn tls_backend(ip: &str, name: &'static str, cert: (String, String)) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.0.as_bytes())
                .map(Result::unwrap)
                .collect(),
            PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(format!("{name}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// What a TLS connection to `addr` for `sni`, trusting `root`, reads.
async fn tls_read(addr: SocketAddr, root: &str, sni: &str) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(client_config(root, None))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    Ok(out.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_routes_by_sni_to_a_server_that_keeps_its_own_certificate() {
    // Istio's "Ingress Gateway without TLS Termination": nginx shows its own certificate.
    let pki = Pki::new();
    let nginx = tls_backend("127.0.0.2", "nginx", pki.issue("nginx.example.com")).await;
    let port = free_port();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: my-nginx}}\nspec:\n  selector: {{app: my-nginx}}\n  ports:\n  - {{name: https, port: 443}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: my-nginx-1}}\nspec:\n  address: {}\n  labels: {{app: my-nginx}}\n  ports: {{https: {}}}\n---\n",
        nginx.ip(),
        nginx.port()
    ) + &gateway(&https_server(port, "https", "nginx.example.com", "{mode: PASSTHROUGH}"))
        + &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: nginx}}\nspec:\n  hosts: [nginx.example.com]\n  gateways: [mygateway]\n  tls:\n  - match:\n    - {{port: {port}, sniHosts: [nginx.example.com]}}\n    route:\n    - destination: {{host: my-nginx, port: {{number: 443}}}}\n---\n");
    let proxy = start_gateway(&yaml).await;
    let addr = proxy.gateway_listeners().await.listening[&port];
    assert_eq!(
        tls_read(addr, pki.root(), "nginx.example.com").await,
        Ok("nginx".into())
    );
    // Another server name has no route: the connection closes before any handshake.
    let other = tls_read(addr, pki.root(), "other.example.com").await;
    assert!(other.is_err(), "{other:?}");

    // A match without a port applies on every gateway port, even beside one that names
    // another port.
    let portless = yaml.replace(
        &format!("    - {{port: {port}, sniHosts: [nginx.example.com]}}\n"),
        "    - {sniHosts: [nginx.example.com]}\n    - {port: 1, sniHosts: [nginx.example.com]}\n",
    );
    assert_ne!(portless, yaml);
    assert_eq!(proxy.reconfigure(&portless).await.last_error, None);
    assert_eq!(
        tls_read(addr, pki.root(), "nginx.example.com").await,
        Ok("nginx".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_servers_carry_bytes_to_the_bound_tcp_route() {
    let echo = tcp_echo("127.0.0.2").await;
    let port = free_port();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: tcp-echo}}\nspec:\n  selector: {{app: tcp-echo}}\n  ports:\n  - {{name: tcp, port: 9000}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: tcp-echo-1}}\nspec:\n  address: {}\n  labels: {{app: tcp-echo}}\n  ports: {{tcp: {}}}\n---\n",
        echo.ip(),
        echo.port()
    ) + &gateway(&format!(
        "  - port: {{number: {port}, name: tcp, protocol: TCP}}\n    hosts: ['*']\n"
    )) + &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp-echo}}\nspec:\n  hosts: ['*']\n  gateways: [mygateway]\n  tcp:\n  - match:\n    - port: {port}\n    route:\n    - destination: {{host: tcp-echo, port: {{number: 9000}}}}\n---\n");
    let proxy = start_gateway(&yaml).await;
    let addr = proxy.gateway_listeners().await.listening[&port];
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"hello\n").await.unwrap();
    let mut buf = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .expect("the echo answers")
        .unwrap();
    assert_eq!(&buf, b"hello\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_terminates_then_carries_tcp_to_its_route() {
    let pki = Pki::new();
    let echo = tcp_echo("127.0.0.2").await;
    let credential = pki.issue("echo.example.com");
    let yaml = |port: u16| {
        format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: tcp-echo}}\nspec:\n  selector: {{app: tcp-echo}}\n  ports:\n  - {{name: tcp, port: 9000}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: tcp-echo-1}}\nspec:\n  address: {}\n  labels: {{app: tcp-echo}}\n  ports: {{tcp: {}}}\n---\n",
        echo.ip(),
        echo.port()
    ) + &tls_secret("echo-credential", &credential)
        + &gateway(&format!(
            "  - port: {{number: {port}, name: tls, protocol: TLS}}\n    hosts: [echo.example.com]\n    tls: {{mode: SIMPLE, credentialName: echo-credential}}\n"
        ))
        + &format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tcp-echo}}\nspec:\n  hosts: [echo.example.com]\n  gateways: [mygateway]\n  tcp:\n  - match:\n    - port: {port}\n    route:\n    - destination: {{host: tcp-echo, port: {{number: 9000}}}}\n---\n")
    };
    let (_proxy, addr) = gateway_on_a_free_port(yaml).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(client_config(pki.root(), None))
        .connect(ServerName::try_from("echo.example.com").unwrap(), tcp)
        .await
        .expect("the gateway shows echo.example.com's certificate");
    tls.write_all(b"hello\n").await.unwrap();
    let mut buf = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf))
        .await
        .expect("the echo answers inside the TLS the gateway terminated")
        .unwrap();
    assert_eq!(&buf, b"hello\n");
}

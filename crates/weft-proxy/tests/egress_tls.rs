//! Istio's "Egress TLS origination" task for real: the app sends plain HTTP to
//! `www.googleapis.com:80`, Istio's own `egress-rule-google-apis.yaml` (read unchanged from
//! `../shared/istio-samples`) sends it to port 443 and the sidecar originates TLS there.
//! Inside a fresh user, network and mount namespace, `www.googleapis.com` resolves to an
//! HTTPS server the test runs on 127.0.0.1:443 with a certificate from its own CA, which
//! `SSL_CERT_FILE` makes the system's bundle (what `SIMPLE` without `caCertificates`
//! trusts, as in Istio). Then the DestinationRule's other settings: a CA that did not sign
//! the server, `subjectAltNames`, `insecureSkipVerify`, `MUTUAL` with a client certificate
//! from files and from a `credentialName` Secret, and `ISTIO_MUTUAL`/`DISABLE` beside auto mTLS are in `mtls.rs`.

mod support;

use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_security::ca::Ca;

const CHILD: &str = "WEFT_EGRESS_TLS_TEST_CHILD";
const CA_FILE: &str = "WEFT_EGRESS_TLS_TEST_CA";
const HOST: &str = "www.googleapis.com";

#[test]
fn tls_origination_as_in_istios_egress_task() {
    if std::env::var_os(CHILD).is_some() {
        return inside_namespace();
    }
    let dir = tempfile::tempdir().unwrap();
    // Made here so the parent can hand the child its bundle through the environment.
    let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
    let bundle = dir.path().join("system-ca.pem");
    std::fs::write(&bundle, ca.root_pem()).unwrap();
    in_namespaces(
        "tls_origination_as_in_istios_egress_task",
        &["--net", "--mount"],
        CHILD,
        &[
            (CA_FILE, dir.path().as_os_str()),
            ("SSL_CERT_FILE", bundle.as_os_str()),
        ],
        "unprivileged user namespaces and mount",
    );
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sample(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/istio-samples")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read Istio sample {}: {e} (istio-samples must be checked out at ../shared)",
            path.display()
        )
    })
}

/// What the HTTPS server saw of one request.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    client_certificate: bool,
    request_line: String,
}

/// An HTTPS server on 127.0.0.1:443 for `www.googleapis.com`, requiring a client
/// certificate from `client_roots` when given. Each request is answered 200 with what it
/// saw in `x-seen-*` headers; `seen` receives it too.
async fn https_server(
    ca: &Ca,
    client_roots: Option<rustls::RootCertStore>,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Seen>,
    tokio::task::JoinHandle<()>,
) {
    let (chain, key) = ca
        .serving(&[HOST], std::time::Duration::from_secs(3600))
        .unwrap();
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(chain[0].as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap();
    let builder = match client_roots {
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:443")
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (_, session) = tls.get_ref();
                let seen = Seen {
                    sni: session.server_name().map(str::to_string),
                    alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                    client_certificate: session.peer_certificates().is_some_and(|c| !c.is_empty()),
                    request_line: String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                };
                let body = "served over TLS";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-seen-sni: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len(),
                    seen.sni.as_deref().unwrap_or("-"),
                );
                let _ = tx.send(seen);
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (rx, task)
}

/// Istio's sample with its DestinationRule's `tls` replaced by `tls` (YAML at its indent).
fn with_tls(tls: &str) -> String {
    let original = sample("bookinfo/networking/egress-rule-google-apis.yaml");
    let marker =
        "      tls:\n        mode: SIMPLE # initiates HTTPS when accessing www.googleapis.com\n";
    assert!(original.contains(marker), "the sample changed:\n{original}");
    original.replace(marker, tls)
}

fn inside_namespace() {
    run("ip", &["link", "set", "lo", "up"]);
    let dir = PathBuf::from(std::env::var_os(CA_FILE).unwrap());
    // This mount namespace's own /etc/hosts: the host's is untouched.
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {HOST}\n")).unwrap();
    run("mount", &["--bind", hosts.to_str().unwrap(), "/etc/hosts"]);
    let ca = Ca::load_or_create(&dir, "cluster.local").unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (mut seen, server) = https_server(&ca, None).await;
            let proxy =
                TestProxy::start(&sample("bookinfo/networking/egress-rule-google-apis.yaml"))
                    .await;
            let http = HttpClient::new(proxy.proxy.outbound_addr);
            // The config applies, and the call gets 503 with `why` in its reason.
            let refused = |yaml: String, why: &'static str| {
                let (proxy, http) = (&proxy, &http);
                async move {
                    let status = proxy.reconfigure(&yaml).await;
                    assert_eq!(status.last_error, None);
                    let answer = http.get(&format!("{HOST}:80"), "/", &[]).await;
                    assert_eq!(answer.status, 503);
                    assert!(answer.hint().contains(why), "{}", answer.hint());
                }
            };

            // SIMPLE, as Istio's sample writes it: the system's bundle, the SNI the host.
            let answer = http.get(&format!("{HOST}:80"), "/", &[]).await;
            assert_eq!(answer.status, 200, "{} {}", answer.text(), answer.hint());
            assert_eq!(answer.text(), "served over TLS");
            let got = seen.recv().await.unwrap();
            assert_eq!(got.sni.as_deref(), Some(HOST));
            assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
            assert_eq!(got.request_line, "GET / HTTP/1.1");
            assert!(!got.client_certificate);

            // caCertificates naming a CA that did not sign the server: refused, and why.
            let (_other_dir, other) = {
                let d = tempfile::tempdir().unwrap();
                let ca = Ca::load_or_create(d.path(), "cluster.local").unwrap();
                (d, ca)
            };
            let other_root = dir.join("other-root.pem");
            std::fs::write(&other_root, other.root_pem()).unwrap();
            // Both roots are named alike, so the chain fails on its signature.
            refused(
                with_tls(&format!(
                    "      tls:\n        mode: SIMPLE\n        caCertificates: {}\n",
                    other_root.display()
                )),
                "invalid peer certificate: BadSignature",
            )
            .await;

            // subjectAltNames the certificate does not have: refused; insecureSkipVerify
            // takes it anyway.
            let root = dir.join("root.pem");
            std::fs::write(&root, ca.root_pem()).unwrap();
            refused(
                with_tls(&format!(
                    "      tls:\n        mode: SIMPLE\n        caCertificates: {}\n        subjectAltNames: [storage.googleapis.com]\n",
                    root.display()
                )),
                "certificate not valid for name \"storage.googleapis.com\"",
            )
            .await;
            proxy
                .reconfigure(&with_tls(
                    "      tls:\n        mode: SIMPLE\n        insecureSkipVerify: true\n        sni: api.example\n",
                ))
                .await;
            let answer = http.get(&format!("{HOST}:80"), "/", &[]).await;
            assert_eq!(answer.status, 200, "{}", answer.hint());
            assert_eq!(seen.recv().await.unwrap().sni.as_deref(), Some("api.example"));
            server.abort();
            let _ = server.await;

            // MUTUAL: a server that requires a client certificate from this CA gets one.
            let (chain, key) = ca
                .serving(&["client.weft.test"], std::time::Duration::from_secs(3600))
                .unwrap();
            let (cert_file, key_file) = (dir.join("client.pem"), dir.join("client-key.pem"));
            std::fs::write(&cert_file, &chain[0]).unwrap();
            std::fs::write(&key_file, &key).unwrap();
            let mut client_roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.root_pem().as_bytes()) {
                client_roots.add(c.unwrap()).unwrap();
            }
            let (mut seen, _server) = https_server(&ca, Some(client_roots)).await;
            proxy
                .reconfigure(&with_tls(&format!(
                    "      tls:\n        mode: MUTUAL\n        clientCertificate: {}\n        privateKey: {}\n        caCertificates: {}\n",
                    cert_file.display(),
                    key_file.display(),
                    root.display()
                )))
                .await;
            let answer = http.get(&format!("{HOST}:80"), "/", &[]).await;
            assert_eq!(answer.status, 200, "{}", answer.hint());
            assert!(seen.recv().await.unwrap().client_certificate);

            // credentialName, as the task's mutual TLS origination names it: a Secret of the
            // proxy's namespace, read because the rule's workloadSelector picks the proxy.
            let pem = |text: &str| text.replace('\n', "\\n");
            let secret = format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: client-credential}}\nstringData:\n  tls.crt: \"{}\"\n  tls.key: \"{}\"\n  ca.crt: \"{}\"\n---\n",
                pem(&chain[0]),
                pem(&key),
                pem(ca.root_pem())
            );
            let by_secret = |selector: &str| {
                secret.clone()
                    + &with_tls("      tls:\n        mode: MUTUAL\n        credentialName: client-credential\n")
                        .replace(
                            "spec:\n  host: www.googleapis.com\n",
                            &format!("spec:\n{selector}  host: www.googleapis.com\n"),
                        )
            };
            let status = proxy
                .reconfigure(&by_secret("  workloadSelector:\n    matchLabels: {app: productpage}\n"))
                .await;
            assert_eq!(status.last_error, None);
            let answer = http.get(&format!("{HOST}:80"), "/", &[]).await;
            assert_eq!(answer.status, 200, "{}", answer.hint());
            assert!(seen.recv().await.unwrap().client_certificate);
            // Without a workloadSelector a sidecar keeps to the files, as Istio's does: this
            // rule names none, so no client certificate, which the server refuses.
            proxy.reconfigure(&by_secret("")).await;
            let answer = http.get(&format!("{HOST}:80"), "/", &[]).await;
            assert_eq!(answer.status, 503, "{}", answer.hint());
            // A selected rule naming a Secret that is not there says which and how to make it.
            refused(
                by_secret("  workloadSelector:\n    matchLabels: {app: productpage}\n")
                    .replace("name: client-credential}", "name: other}"),
                "no Secret default/client-credential (weft create secret generic client-credential -n default",
            )
            .await;

            // A missing file is named in the 503's reason.
            refused(
                with_tls(
                    "      tls:\n        mode: MUTUAL\n        clientCertificate: /nonexistent/cert.pem\n        privateKey: /nonexistent/key.pem\n",
                ),
                "cannot read clientCertificate /nonexistent/cert.pem",
            )
            .await;
        });
}

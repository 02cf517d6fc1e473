//! A proxy's workload identity against a real control plane: its pod credential buys a
//! certificate for its service account on 15012, the proxy follows discovery over 15012's
//! TLS with it, renews it at half its life, shows it (never its key) in `/config_dump`, and
//! rotates it under mTLS load without failing a request.

mod support;

use base64::Engine;
use std::time::Duration;
use support::HttpClient;
use weft_control::{ControlOptions, ControlPlane};
use weft_discovery::discovery::Hello;
use weft_proxy::config::StreamSource;
use weft_proxy::identity::CaClient;
use weft_proxy::workload::Workload;
use weft_proxy::{Proxy, ProxyOptions};
use weft_security::cert::{chain_der, CertInfo};
use weft_security::credential::PodClaims;
use weft_security::Identity;

async fn control_plane(dir: &std::path::Path) -> ControlPlane {
    let mut opts = ControlOptions::new(dir.to_path_buf());
    opts.grpc = Some("127.0.0.1:0".parse().unwrap());
    opts.monitoring = "127.0.0.1:0".parse().unwrap();
    opts.grpc_tls = Some("127.0.0.1:0".parse().unwrap());
    ControlPlane::start(opts).await.unwrap()
}

fn reviews() -> Workload {
    Workload {
        name: "reviews-v1".into(),
        pod: "reviews-v1-0".into(),
        namespace: "default".into(),
        labels: [("app".to_string(), "reviews".to_string())].into(),
        service_account: "bookinfo-reviews".into(),
        instance_ip: String::new(),
    }
}

async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_follows_15012_with_its_own_certificate_and_renews_it_at_half_life() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path()).await;
    let workload = reviews();
    let identity = Identity::new("cluster.local", "default", "bookinfo-reviews").unwrap();
    let credential = cp
        .issue_pod_credential(&PodClaims {
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            pod: "reviews-v1-0".into(),
        })
        .unwrap();
    let tls_addr = cp.grpc_tls_addr.unwrap();
    // Two seconds: the CA backdates by a minute, and the proxy still renews after one.
    let certificates = CaClient {
        endpoint: format!("https://{tls_addr}"),
        root_pem: cp.ca.root_pem().to_string(),
        credential,
        credential_file: None,
        identity: identity.clone(),
        ttl: Some(Duration::from_secs(2)),
        backoff: Default::default(),
    }
    .start();

    let mut opts = ProxyOptions::istio_defaults(workload.clone());
    opts.bind_all("127.0.0.1:0".parse().unwrap());
    opts.certificates = Some(certificates.clone());
    let proxy = Proxy::start(opts).await.unwrap();
    tokio::spawn(
        StreamSource {
            endpoint: format!("https://{tls_addr}"),
            tls: Some(certificates.clone()),
            hello: Hello {
                name: workload.pod.clone(),
                namespace: workload.namespace.clone(),
                service_account: workload.service_account.clone(),
                ..Default::default()
            },
            backoff: Default::default(),
        }
        .run(proxy.config.clone()),
    );
    let store = proxy.config.clone();
    until("the first config over 15012", || {
        store.is_ready().then_some(())
    })
    .await;

    let first = certificates.next_after(None).await;
    assert_eq!(first.identity, identity);
    assert_eq!(first.leaf.uri_sans, vec![identity.to_string()]);
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        certificates.next_after(Some(&first.leaf.serial_number)),
    )
    .await
    .expect("a renewed certificate within 10 s");
    assert_ne!(second.leaf.serial_number, first.leaf.serial_number);
    assert!(second.leaf.not_after >= first.leaf.not_after);

    // The control plane hears of each certificate the proxy holds (proxy-config secret).
    let reported = || {
        cp.state
            .mesh()
            .find_proxy("reviews-v1-0")
            .map(|(_, p)| p.certificate_chain.clone())
    };
    until("the certificate held reported to the control plane", || {
        let held = certificates.current()?;
        (held.leaf.serial_number != first.leaf.serial_number && reported()? == held.chain_pem)
            .then_some(())
    })
    .await;

    // What /config_dump shows is the certificate held now, and never the key.
    let dump = HttpClient::new(proxy.admin_addr)
        .get(&proxy.admin_addr.to_string(), "/config_dump", &[])
        .await
        .text();
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let secrets = dump["secrets"]["dynamicActiveSecrets"].as_array().unwrap();
    let b64 = |v: &serde_json::Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let default = &secrets[0]["secret"]["tlsCertificate"];
    assert_eq!(b64(&default["privateKey"]["inlineBytes"]), "[redacted]");
    let held =
        CertInfo::of_der(&chain_der(&b64(&default["certificateChain"]["inlineBytes"])).unwrap()[0])
            .unwrap();
    assert_eq!(held.uri_sans, vec![identity.to_string()]);
    assert!(held.not_after >= second.leaf.not_after);
    assert_eq!(secrets[1]["name"], "ROOTCA");
    assert_eq!(
        b64(&secrets[1]["secret"]["validationContext"]["trustedCa"]["inlineBytes"]),
        cp.ca.root_pem()
    );
}

/// A credential this control plane did not issue buys nothing: the proxy says why and holds
/// no certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_credential_gets_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path()).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = control_plane(other_dir.path()).await;
    let forged = other
        .issue_pod_credential(&PodClaims {
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            pod: "reviews-v1-0".into(),
        })
        .unwrap();
    let certificates = CaClient {
        endpoint: format!("https://{}", cp.grpc_tls_addr.unwrap()),
        root_pem: cp.ca.root_pem().to_string(),
        credential: forged,
        credential_file: None,
        identity: Identity::new("cluster.local", "default", "bookinfo-reviews").unwrap(),
        ttl: None,
        backoff: Default::default(),
    }
    .start();
    let error = until("the CA's refusal", || certificates.last_error()).await;
    assert!(
        error.contains("refused the certificate request") && error.contains("signature"),
        "{error}"
    );
    assert!(certificates.current().is_none());
}

/// A certificate for `sa` from the control plane's CA, renewed every second or so.
fn short_lived(cp: &ControlPlane, pod: &str, sa: &str) -> weft_proxy::identity::Certificates {
    let credential = cp
        .issue_pod_credential(&PodClaims {
            namespace: "default".into(),
            service_account: sa.into(),
            pod: pod.into(),
        })
        .unwrap();
    CaClient {
        endpoint: format!("https://{}", cp.grpc_tls_addr.unwrap()),
        root_pem: cp.ca.root_pem().to_string(),
        credential,
        credential_file: None,
        identity: Identity::new("cluster.local", "default", sa).unwrap(),
        ttl: Some(Duration::from_secs(2)),
        backoff: Default::default(),
    }
    .start()
}

/// Both sidecars of an mTLS pair rotate their certificates every second or so while
/// requests flow: connections made before a rotation keep serving, new ones use the new
/// certificate, and not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let cp = control_plane(dir.path()).await;
    let app = support::Backend::start("127.0.0.1", "reviews-v1", support::ok()).await;
    let server_certs = short_lived(&cp, "reviews-v1-0", "bookinfo-reviews");
    let client_certs = short_lived(&cp, "productpage-v1-0", "bookinfo-productpage");
    server_certs.next_after(None).await;
    client_certs.next_after(None).await;

    let start = |workload: Workload, certs, app| async move {
        let mut opts = ProxyOptions::istio_defaults(workload);
        opts.bind_all("127.0.0.1:0".parse().unwrap());
        opts.inbound_target = app;
        opts.certificates = Some(certs);
        opts.access_log = weft_proxy::telemetry::access_log::AccessLog::Off;
        Proxy::start(opts).await.unwrap()
    };
    let server = start(reviews(), server_certs.clone(), Some(app.addr)).await;
    server.config.apply(Vec::new()).await.unwrap();
    let productpage = Workload {
        name: "productpage-v1".into(),
        pod: "productpage-v1-0".into(),
        service_account: "bookinfo-productpage".into(),
        labels: [("app".to_string(), "productpage".to_string())].into(),
        ..reviews()
    };
    let client = start(productpage, client_certs.clone(), None).await;
    let inbound = server.inbound_addr;
    // Three requests per connection: new handshakes all along, beside pooled connections.
    let mesh = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  selector:\n    app: reviews\n  ports:\n  - name: http\n    port: 9080\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: reviews-v1\nspec:\n  address: {ip}\n  serviceAccount: bookinfo-reviews\n  labels:\n    app: reviews\n    security.istio.io/tlsMode: istio\n  ports:\n    http: {port}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRequestsPerConnection: 3\n",
        ip = inbound.ip(),
        port = inbound.port(),
    );
    let loaded = weft_api::load_str(&mesh, std::path::Path::new("mesh.yaml"));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    client.config.apply(loaded.resources).await.unwrap();

    // Load until each side has rotated twice.
    let serial =
        |c: &weft_proxy::identity::Certificates| c.current().unwrap().leaf.serial_number.clone();
    let (server_first, client_first) = (serial(&server_certs), serial(&client_certs));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let http = HttpClient::new(client.outbound_addr);
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = http.get("reviews:9080", "/", &[]).await;
                if answer.status == 200 {
                    ok += 1;
                } else {
                    failed.push(format!(
                        "{} {:?}",
                        answer.status,
                        answer.headers.get("x-weft-error")
                    ));
                }
            }
            (ok, failed)
        }));
    }
    let mut rotations = (0, 0);
    let (mut seen_server, mut seen_client) = (server_first, client_first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rotations.0 < 2 || rotations.1 < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "two rotations each within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        if serial(&server_certs) != seen_server {
            seen_server = serial(&server_certs);
            rotations.0 += 1;
        }
        if serial(&client_certs) != seen_client {
            seen_client = serial(&client_certs);
            rotations.1 += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests in the run");
    // Every request was mTLS, and the server saw the client's identity throughout.
    support::wait_for(
        server.stats_addr,
        "istio_requests_total",
        &[
            ("connection_security_policy", "mutual_tls"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
            ),
        ],
        ok as f64,
    )
    .await;
    eprintln!("{ok} requests, no failures, across {rotations:?} rotations");
}

//! A proxy's workload identity against a real control plane: its pod credential buys a
//! certificate for its service account on 15012, the proxy follows discovery over 15012's
//! TLS with it, renews it at half its life, and shows it (never its key) in `/config_dump`.

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
    opts.grpc = "127.0.0.1:0".parse().unwrap();
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

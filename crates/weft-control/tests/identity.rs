//! The control plane as a CA on 15012: a pod credential buys a certificate for its own
//! identity on the proxy's key, and discovery on the TLS port needs that certificate.

use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use weft_control::{ControlOptions, ControlPlane};
use weft_discovery::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use weft_discovery::ca::IstioCertificateRequest;
use weft_discovery::discovery::discovery_client::DiscoveryClient;
use weft_discovery::discovery::{proxy_message, Hello, ProxyMessage};
use weft_security::cert::{chain_der, CertInfo};
use weft_security::credential::{Issuer, PodClaims};
use weft_security::workload::WorkloadKey;

async fn start(dir: &std::path::Path) -> ControlPlane {
    let mut opts = ControlOptions::new(dir.to_path_buf());
    opts.grpc = Some("127.0.0.1:0".parse().unwrap());
    opts.monitoring = "127.0.0.1:0".parse().unwrap();
    opts.grpc_tls = Some("127.0.0.1:0".parse().unwrap());
    ControlPlane::start(opts).await.unwrap()
}

async fn channel(cp: &ControlPlane, client: Option<Identity>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cp.ca.root_pem()))
        .domain_name(weft_discovery::CONTROL_PLANE_SAN);
    if let Some(id) = client {
        tls = tls.identity(id);
    }
    Endpoint::from_shared(format!("https://{}", cp.grpc_tls_addr.unwrap()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

fn reviews() -> PodClaims {
    PodClaims {
        namespace: "default".into(),
        service_account: "bookinfo-reviews".into(),
        pod: "reviews-v1-0".into(),
    }
}

async fn ask(
    channel: Channel,
    credential: Option<&str>,
    csr: String,
    validity_s: i64,
) -> Result<Vec<String>, tonic::Status> {
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: validity_s,
    });
    if let Some(c) = credential {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {c}").parse().unwrap());
    }
    IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .map(|r| r.into_inner().cert_chain)
}

fn leaf(chain: &[String]) -> CertInfo {
    CertInfo::of_der(&chain_der(&chain[0]).unwrap()[0]).unwrap()
}

async fn first_update(
    channel: Channel,
    namespace: &str,
    address: &str,
) -> Result<(), tonic::Status> {
    let hello = Hello {
        name: "reviews-v1-0".into(),
        namespace: namespace.into(),
        address: address.into(),
        ..Default::default()
    };
    first_update_of(channel, hello).await.map(drop)
}

/// `Kind namespace/name` of what the first update to a proxy saying `hello` carries.
async fn first_update_of(
    channel: Channel,
    hello: Hello,
) -> Result<std::collections::BTreeSet<String>, tonic::Status> {
    let first = ProxyMessage {
        message: Some(proxy_message::Message::Hello(hello)),
    };
    // The stream stays open, as a proxy's does.
    let outbound = tokio_stream::iter(vec![first]).chain(tokio_stream::pending());
    let mut updates = DiscoveryClient::new(channel)
        .stream(outbound)
        .await?
        .into_inner();
    match updates.message().await? {
        Some(u) => Ok(u
            .resources
            .iter()
            .filter_map(|r| r.key.as_ref())
            .map(|k| format!("{} {}/{}", k.kind, k.namespace, k.name))
            .collect()),
        None => Err(tonic::Status::aborted("the stream ended")),
    }
}

use tokio_stream::StreamExt;

#[tokio::test]
async fn a_pod_credential_buys_a_certificate_for_its_identity_only() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let root_key = dir.path().join(".weft/ca/root-key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&root_key).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the root's key is readable by others");
    let credential = cp.issue_pod_credential(&reviews()).unwrap();
    let key = WorkloadKey::generate().unwrap();
    // A CSR for another service account is refused, and the refusal names both.
    let foreign =
        weft_security::Identity::parse("spiffe://cluster.local/ns/default/sa/admin").unwrap();
    let refused = ask(
        channel(&cp, None).await,
        Some(&credential),
        key.csr(&foreign).unwrap(),
        3600,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("asks for spiffe://cluster.local/ns/default/sa/admin")
            && refused
                .message()
                .contains("proves spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{refused:?}"
    );
    let own =
        weft_security::Identity::parse("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
            .unwrap();
    let csr = key.csr(&own).unwrap();

    let chain = ask(
        channel(&cp, None).await,
        Some(&credential),
        csr.clone(),
        3600,
    )
    .await
    .unwrap();
    let cert = leaf(&chain);
    assert_eq!(
        cert.identity().unwrap().to_string(),
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert_eq!(cert.not_after - cert.not_before, 3600 + 60);
    assert_eq!(chain.last().unwrap(), cp.ca.root_pem());
    // Longer than the CA grants: Istio's 24 h.
    let long = ask(
        channel(&cp, None).await,
        Some(&credential),
        csr.clone(),
        864_000,
    )
    .await
    .unwrap();
    assert_eq!(
        leaf(&long).not_after - leaf(&long).not_before,
        24 * 3600 + 60
    );

    // No credential, or one another control plane signed: refused.
    let none = ask(channel(&cp, None).await, None, csr.clone(), 3600).await;
    assert_eq!(none.unwrap_err().code(), tonic::Code::Unauthenticated);
    let elsewhere = Issuer::load_or_create(&dir.path().join("other.key")).unwrap();
    let forged = elsewhere.issue(&reviews()).unwrap();
    let refused = ask(channel(&cp, None).await, Some(&forged), csr, 3600).await;
    let status = refused.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("signature"), "{status:?}");

    // Discovery on 15012: no certificate, refused; the certificate, for its own namespace.
    let anonymous = first_update(channel(&cp, None).await, "default", "").await;
    assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated);
    let identity = Identity::from_pem(chain.concat(), key.private_key_pem());
    let with_cert = channel(&cp, Some(identity.clone())).await;
    // Its workload registers without the join token, bound to the certificate's identity.
    first_update(with_cert, "default", "10.1.2.3")
        .await
        .unwrap();
    let announced = weft_discovery::wire::Key {
        kind: weft_api::Kind::WorkloadEntry,
        namespace: "default".into(),
        name: "reviews-v1-0-10-1-2-3".into(),
    };
    let entry = cp
        .state
        .mesh()
        .objects()
        .get(&announced)
        .map(|o| o.json.clone())
        .expect("the certified proxy's workload is registered");
    let entry: serde_json::Value = serde_json::from_slice(&entry).unwrap();
    assert_eq!(entry["spec"]["serviceAccount"], "bookinfo-reviews");
    let other_namespace =
        first_update(channel(&cp, Some(identity)).await, "istio-system", "").await;
    assert_eq!(
        other_namespace.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    // A restart keeps the root and the credentials already handed out.
    let root = cp.ca.root_pem().to_string();
    drop(cp);
    let again = start(dir.path()).await;
    assert_eq!(again.ca.root_pem(), root);
    let csr = WorkloadKey::generate().unwrap().csr(&own).unwrap();
    ask(channel(&again, None).await, Some(&credential), csr, 3600)
        .await
        .unwrap();
}

/// A certificate for `pod` of service account `sa` in `default`, as a client identity.
async fn certified(cp: &ControlPlane, sa: &str, pod: &str) -> Identity {
    let claims = PodClaims {
        namespace: "default".into(),
        service_account: sa.into(),
        pod: pod.into(),
    };
    let credential = cp.issue_pod_credential(&claims).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let id = weft_security::Identity::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}"))
        .unwrap();
    let chain = ask(
        channel(cp, None).await,
        Some(&credential),
        key.csr(&id).unwrap(),
        3600,
    )
    .await
    .unwrap();
    Identity::from_pem(chain.concat(), key.private_key_pem())
}

#[tokio::test]
async fn secrets_reach_only_gateways_whose_gateways_name_them_and_only_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let secret = |name: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: CERT, tls.key: KEY}}\n---\n")
    };
    let gateway = |credential: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: mygateway}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [httpbin.example.com]\n    tls: {{mode: SIMPLE, credentialName: {credential}}}\n---\n")
    };
    let yaml = secret("httpbin-credential") + &secret("unrelated") + &gateway("httpbin-credential");
    cp.state.apply("test.yaml", &yaml).await.unwrap();
    let gateway_hello = |name: &str| Hello {
        name: name.into(),
        namespace: "default".into(),
        labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        ..Default::default()
    };
    let gateway_id = certified(&cp, "istio-ingressgateway", "gw-0").await;

    let named = first_update_of(
        channel(&cp, Some(gateway_id.clone())).await,
        gateway_hello("gw-0"),
    )
    .await
    .unwrap();
    assert!(
        named.contains("Secret default/httpbin-credential"),
        "{named:?}"
    );
    assert!(!named.contains("Secret default/unrelated"), "{named:?}");

    // A sidecar of the same namespace, certified, is sent no Secret.
    let sidecar = first_update_of(
        channel(
            &cp,
            Some(certified(&cp, "bookinfo-reviews", "reviews-v1-0").await),
        )
        .await,
        Hello {
            name: "reviews-v1-0".into(),
            namespace: "default".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        sidecar.iter().all(|n| !n.starts_with("Secret ")),
        "{sidecar:?}"
    );

    // The gateway on the plaintext port only claims its namespace: no Secret.
    let plaintext = Endpoint::from_shared(format!("http://{}", cp.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let claimed = first_update_of(plaintext, gateway_hello("gw-1"))
        .await
        .unwrap();
    assert!(
        claimed.iter().all(|n| !n.starts_with("Secret ")),
        "{claimed:?}"
    );

    // Once the Gateway names the other Secret, a gateway is sent that one instead.
    let renamed = secret("httpbin-credential") + &secret("unrelated") + &gateway("unrelated");
    cp.state.apply("test.yaml", &renamed).await.unwrap();
    let now = first_update_of(channel(&cp, Some(gateway_id)).await, gateway_hello("gw-0"))
        .await
        .unwrap();
    assert!(now.contains("Secret default/unrelated"), "{now:?}");
    assert!(
        !now.contains("Secret default/httpbin-credential"),
        "{now:?}"
    );
}

#[tokio::test]
async fn a_destination_rules_credential_reaches_the_sidecars_its_workload_selector_picks() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    // Istio's "Egress TLS origination" task: the client's Secret, and a rule for its pods.
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: client-credential}\nstringData: {tls.crt: CERT, tls.key: KEY, ca.crt: CA}\n---\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: originate-mtls-for-nginx}\nspec:\n  workloadSelector: {matchLabels: {app: curl}}\n  host: my-nginx.mesh-external.svc.cluster.local\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      tls: {mode: MUTUAL, credentialName: client-credential, sni: my-nginx.mesh-external.svc.cluster.local}\n";
    cp.state.apply("test.yaml", yaml).await.unwrap();
    let sidecar = |app: &str| Hello {
        name: format!("{app}-0"),
        namespace: "default".into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ..Default::default()
    };
    let curl = first_update_of(
        channel(&cp, Some(certified(&cp, "curl", "curl-0").await)).await,
        sidecar("curl"),
    )
    .await
    .unwrap();
    assert!(
        curl.contains("Secret default/client-credential"),
        "{curl:?}"
    );
    // Another pod of the namespace is not the rule's.
    let other = first_update_of(
        channel(
            &cp,
            Some(certified(&cp, "bookinfo-reviews", "reviews-0").await),
        )
        .await,
        sidecar("reviews"),
    )
    .await
    .unwrap();
    assert!(other.iter().all(|n| !n.starts_with("Secret ")), "{other:?}");
}

async fn version(channel: Channel) -> Result<(), tonic::Status> {
    weft_discovery::admin::admin_client::AdminClient::new(channel)
        .version(weft_discovery::admin::VersionRequest::default())
        .await
        .map(drop)
}

#[tokio::test]
async fn the_admin_api_on_15012_takes_the_admin_identitys_certificate_and_no_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let file = dir.path().join(".weft/admin.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the admin credential is readable by others"
    );
    let credential = weft_discovery::credentials::AdminCredential::read(&file).unwrap();
    assert_eq!(credential.root_pem(), Some(cp.ca.root_pem().trim_end()));
    let admin = Identity::from_pem(credential.pem(), credential.pem());
    let leaf = leaf(&[credential.pem().to_string()]);
    assert_eq!(leaf.uri_sans, ["spiffe://cluster.local/weft/admin"]);
    // It authenticates a client only: it cannot serve as the control plane or a sidecar.
    assert!(leaf.identity().is_none());

    version(channel(&cp, Some(admin)).await).await.unwrap();
    let anonymous = version(channel(&cp, None).await).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    // A workload's certificate, however valid, is not the admin's.
    let workload = certified(&cp, "bookinfo-reviews", "reviews-v1-0").await;
    let refused = version(channel(&cp, Some(workload)).await)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("ns/default/sa/bookinfo-reviews, not the admin identity"),
        "{refused:?}"
    );

    // A restart keeps the credential the CLI already holds.
    drop(cp);
    let again = start(dir.path()).await;
    let kept = weft_discovery::credentials::AdminCredential::read(&file).unwrap();
    assert_eq!(kept.pem(), credential.pem());
    version(channel(&again, Some(Identity::from_pem(kept.pem(), kept.pem()))).await)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_admin_credential_is_renewed_while_the_control_plane_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ControlOptions::new(dir.path().to_path_buf());
    opts.monitoring = "127.0.0.1:0".parse().unwrap();
    opts.grpc_tls = Some("127.0.0.1:0".parse().unwrap());
    opts.admin_renewal_check = Duration::from_millis(50);
    let cp = ControlPlane::start(opts).await.unwrap();
    let file = dir.path().join(".weft/admin.pem");
    let not_after = |c: &weft_discovery::credentials::AdminCredential| {
        CertInfo::of_der(&chain_der(c.pem()).unwrap()[0])
            .unwrap()
            .not_after
    };
    // As if the control plane had run for most of the credential's life: an hour is left.
    let (chain, key) = cp.ca.admin_client(Duration::from_secs(3600)).unwrap();
    let ageing = weft_discovery::credentials::AdminCredential::new(&chain, &key);
    ageing.write(&file).unwrap();
    let renewed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = weft_discovery::credentials::AdminCredential::read(&file).unwrap();
            if not_after(&now) > not_after(&ageing) + 24 * 3600 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the ageing admin credential was never renewed");
    version(channel(&cp, Some(Identity::from_pem(renewed.pem(), renewed.pem()))).await)
        .await
        .unwrap();
}

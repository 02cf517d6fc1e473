//! Mutual TLS between two workloads over real sockets: certificates from one mesh CA, the
//! server learning the client's SPIFFE ID, the client refusing a server that is not the
//! identity it expects, and certificates from another root or past their life refused.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_security::ca::Ca;
use weft_security::tls::{
    certified_key, client_config, peer_identity, server_config, Accept, CurrentCertificate,
    MeshRoot, ALPN_ISTIO, ALPN_PEER_EXCHANGE,
};
use weft_security::workload::WorkloadKey;
use weft_security::Identity;

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl CurrentCertificate for Fixed {
    fn current(&self) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa).unwrap()
}

fn workload(ca: &Ca, identity: &Identity, ttl: Duration) -> Arc<dyn CurrentCertificate> {
    let key = WorkloadKey::generate().unwrap();
    let chain = ca.sign(&key.csr(identity).unwrap(), identity, ttl).unwrap();
    // Leaf and intermediates; the root is the other side's to trust.
    let presented = chain[..chain.len() - 1].concat();
    Arc::new(Fixed(
        certified_key(&presented, &key.private_key()).unwrap(),
    ))
}

/// The server's view of a handshake: the client's identity and the ALPN agreed, or the
/// error; the client's result beside it.
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> (
    Result<(Option<Identity>, Option<Vec<u8>>), String>,
    Result<(), String>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let seen = (
            peer_identity(conn.peer_certificates()),
            conn.alpn_protocol().map(<[u8]>::to_vec),
        );
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok::<_, String>(seen)
    });
    let connector = TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    // Istio's SNI for a cluster; the name plays no part in verification.
    let sni = rustls::pki_types::ServerName::try_from(
        "outbound_.9080_._.reviews.default.svc.cluster.local",
    )
    .unwrap()
    .to_owned();
    let client_result = async {
        let mut tls = connector
            .connect(sni, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        assert_eq!(&pong, b"pong");
        Ok::<_, String>(())
    }
    .await;
    let server_result = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server side ends")
        .unwrap();
    (server_result, client_result)
}

const ALPN: &[&[u8]] = &[ALPN_PEER_EXCHANGE, ALPN_ISTIO];

#[tokio::test]
async fn two_workloads_of_one_mesh_talk_and_the_server_learns_who_called() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
    let root = MeshRoot::from_pem(ca.root_pem()).unwrap();
    let reviews = workload(&ca, &id("bookinfo-reviews"), Duration::from_secs(3600));
    let productpage = workload(&ca, &id("bookinfo-productpage"), Duration::from_secs(3600));

    let server = server_config(&root, reviews.clone(), ALPN).unwrap();
    let client = client_config(
        &root,
        productpage.clone(),
        Accept::Identities(vec![id("bookinfo-reviews")]),
        ALPN,
    )
    .unwrap();
    let (server_saw, client_result) = handshake(server, client).await;
    client_result.unwrap();
    let (caller, alpn) = server_saw.unwrap();
    assert_eq!(caller, Some(id("bookinfo-productpage")));
    assert_eq!(alpn.as_deref(), Some(ALPN_PEER_EXCHANGE));

    // Any workload of the trust domain, when the destination names no service account.
    let server = server_config(&root, reviews.clone(), ALPN).unwrap();
    let client = client_config(
        &root,
        productpage.clone(),
        Accept::TrustDomain("cluster.local".into()),
        ALPN,
    )
    .unwrap();
    handshake(server, client).await.1.unwrap();

    // A server that is not the identity the client expects: the client refuses it.
    let server = server_config(&root, reviews, ALPN).unwrap();
    let client = client_config(
        &root,
        productpage,
        Accept::Identities(vec![id("bookinfo-ratings")]),
        ALPN,
    )
    .unwrap();
    let (_, refused) = handshake(server, client).await;
    let error = refused.unwrap_err();
    assert!(
        error.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
            && error.contains("does not accept"),
        "{error}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_root_or_past_its_life_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = Ca::load_or_create(other_dir.path(), "cluster.local").unwrap();
    let root = MeshRoot::from_pem(ca.root_pem()).unwrap();
    let reviews = workload(&ca, &id("bookinfo-reviews"), Duration::from_secs(3600));
    let accept = Accept::TrustDomain("cluster.local".into());

    // A client whose certificate another CA signed: the server refuses it.
    let stranger = workload(
        &other,
        &id("bookinfo-productpage"),
        Duration::from_secs(3600),
    );
    let server = server_config(&root, reviews.clone(), ALPN).unwrap();
    let client = client_config(&root, stranger, accept.clone(), ALPN).unwrap();
    let (server_saw, _) = handshake(server, client).await;
    let error = server_saw.unwrap_err();
    // Both roots have the same (empty) subject, so the path ends at a signature check.
    assert!(
        error.contains("BadSignature") || error.contains("UnknownIssuer"),
        "{error}"
    );

    // A server certificate from another CA: the client refuses it.
    let impostor = workload(&other, &id("bookinfo-reviews"), Duration::from_secs(3600));
    let productpage = workload(&ca, &id("bookinfo-productpage"), Duration::from_secs(3600));
    let server = server_config(&root, impostor, ALPN).unwrap();
    let client = client_config(&root, productpage, accept.clone(), ALPN).unwrap();
    let error = handshake(server, client).await.1.unwrap_err();
    assert!(
        error.contains("BadSignature") || error.contains("UnknownIssuer"),
        "{error}"
    );

    // Two hours on, an hour's certificate is past its life: the server refuses it.
    let productpage = workload(&ca, &id("bookinfo-productpage"), Duration::from_secs(3600));
    let mut server = server_config(&root, reviews, ALPN).unwrap();
    server.time_provider = Arc::new(Later(Duration::from_secs(7200)));
    let client = client_config(&root, productpage, accept, ALPN).unwrap();
    let error = handshake(server, client).await.0.unwrap_err();
    assert!(error.contains("certificate expired"), "{error}");
}

/// The clock two hours from now, for certificates that have aged.
#[derive(Debug)]
struct Later(Duration);

impl rustls::time_provider::TimeProvider for Later {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(rustls::pki_types::UnixTime::since_unix_epoch(now + self.0))
    }
}

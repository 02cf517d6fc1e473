//! The workload's certificate, as Istio's agent keeps it: a key made in memory for each
//! certificate, a CSR to the control plane's CA on 15012 carrying the pod credential, and a
//! new certificate at half the old one's life. Holders read the newest one as they need it,
//! so connections made before a rotation keep theirs.

use crate::config::Backoff;
use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use weft_discovery::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use weft_discovery::ca::IstioCertificateRequest;
use weft_security::cert::{chain_der, CertError, CertInfo};
use weft_security::tls::{self, CurrentCertificate};
use weft_security::workload::WorkloadKey;
use weft_security::Identity;

/// Istio's name for the workload's certificate in Envoy's secrets.
pub const DEFAULT_SECRET: &str = "default";
/// Istio's name for the mesh root in Envoy's secrets.
pub const ROOT_SECRET: &str = "ROOTCA";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot reach the CA at {endpoint}: {source} (is `weft control` serving 15012 there?)"
    )]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("the CA at {endpoint} refused the certificate request: {status}")]
    Refused {
        endpoint: String,
        status: tonic::Status,
    },
    #[error("cannot make a key and CSR: {0}")]
    Key(#[from] weft_security::workload::KeyError),
    #[error("the CA answered with no usable certificate: {0}")]
    Chain(#[from] CertError),
    #[error("the CA answered with an empty chain")]
    EmptyChain,
    #[error("the CA's certificate cannot serve TLS: {0}")]
    Unusable(#[from] tls::TlsError),
    #[error("the CA's certificate names {found}, not {wanted}")]
    WrongIdentity { wanted: String, found: String },
}

/// A certificate this proxy holds, with the key it was signed on.
pub struct WorkloadCertificate {
    /// Leaf first, then any intermediates; PEM.
    pub chain_pem: String,
    pub leaf: CertInfo,
    pub identity: Identity,
    /// When it was received.
    pub received: SystemTime,
    key: WorkloadKey,
    /// The chain and key as rustls presents them in the data path's handshakes.
    certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("serial", &self.leaf.serial_number)
            .finish()
    }
}

impl WorkloadCertificate {
    /// The chain and key as tonic takes a client identity; the key stays in this process.
    pub fn tls_identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.chain_pem, self.key.private_key_pem())
    }
}

/// The newest certificate; `None` until the first arrives.
#[derive(Clone)]
pub struct Certificates {
    current: watch::Receiver<Option<Arc<WorkloadCertificate>>>,
    /// The same certificate for handshakes, read without the watch channel's lock.
    handshake: Arc<ArcSwapOption<CertifiedKey>>,
    /// Why the last request failed, until one succeeds.
    last_error: Arc<parking_lot::Mutex<Option<String>>>,
    /// The mesh root, as the CA's answer and the proxy's start gave it.
    pub root_pem: Arc<str>,
    /// Whom the certificates name.
    pub identity: Identity,
}

impl Certificates {
    pub fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        self.current.borrow().clone()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Waits for a certificate, the first or a newer one than `seen` (by serial number).
    pub async fn next_after(&self, seen: Option<&str>) -> Arc<WorkloadCertificate> {
        let mut rx = self.current.clone();
        loop {
            if let Some(c) = rx.borrow_and_update().clone() {
                if Some(c.leaf.serial_number.as_str()) != seen {
                    return c;
                }
            }
            if rx.changed().await.is_err() {
                // The fetcher is gone: the proxy is stopping.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Envoy's `SecretsConfigDump`, as `istioctl proxy-config secret` reads it: each secret's
    /// chain in base64, the private key written `[redacted]` as Envoy writes it.
    pub fn dump(&self) -> serde_json::Value {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut active = Vec::new();
        if let Some(c) = self.current() {
            active.push(serde_json::json!({
                "name": DEFAULT_SECRET,
                "versionInfo": c.leaf.serial_number,
                "lastUpdated": weft_api::types::timestamp::rfc3339(c.received, weft_api::types::timestamp::Fraction::Millis),
                "secret": {
                    "name": DEFAULT_SECRET,
                    "tlsCertificate": {
                        "certificateChain": {"inlineBytes": b64(&c.chain_pem)},
                        "privateKey": {"inlineBytes": b64("[redacted]")},
                    },
                },
            }));
        }
        active.push(serde_json::json!({
            "name": ROOT_SECRET,
            "secret": {
                "name": ROOT_SECRET,
                "validationContext": {"trustedCa": {"inlineBytes": b64(&self.root_pem)}},
            },
        }));
        serde_json::json!({
            "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
            "dynamicActiveSecrets": active,
            "lastError": self.last_error(),
        })
    }
}

impl Certificates {
    /// A certificate given whole (Istio's file-mounted certificates): `chain_pem` is the
    /// leaf and any intermediates, `key_pem` its key. It is never renewed.
    pub fn fixed(
        chain_pem: &str,
        key_pem: &str,
        root_pem: &str,
        identity: Identity,
    ) -> Result<Certificates, IdentityError> {
        let key = WorkloadKey::from_pem(key_pem)?;
        let leaf = CertInfo::of_der(
            chain_der(chain_pem)?
                .first()
                .ok_or(IdentityError::EmptyChain)?,
        )?;
        let certified = tls::certified_key(chain_pem, &key.private_key())?;
        let certificate = WorkloadCertificate {
            chain_pem: chain_pem.to_string(),
            leaf,
            identity: identity.clone(),
            received: SystemTime::now(),
            key,
            certified: certified.clone(),
        };
        // Nothing renews it: the receiver keeps the one value its dropped sender left.
        let (_, current) = watch::channel(Some(Arc::new(certificate)));
        Ok(Certificates {
            current,
            handshake: Arc::new(ArcSwapOption::from(Some(certified))),
            last_error: Default::default(),
            root_pem: root_pem.into(),
            identity,
        })
    }
}

impl CurrentCertificate for Certificates {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.handshake.load_full()
    }
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("current", &self.current.borrow().as_deref())
            .finish()
    }
}

/// Where and how this proxy asks for its certificate.
pub struct CaClient {
    /// `https://HOST:15012`.
    pub endpoint: String,
    /// The mesh root: the CA's serving certificate must chain to it.
    pub root_pem: String,
    /// The pod credential the platform gave this pod.
    pub credential: String,
    /// Where the credential is kept, read again before each request: Kubernetes rotates a
    /// projected service account token in place. `credential` serves when it does not read.
    pub credential_file: Option<std::path::PathBuf>,
    /// The identity the credential stands for, which the certificate must name.
    pub identity: Identity,
    /// The lifetime to ask for; `None`: the CA's default (Istio's 24 h).
    pub ttl: Option<Duration>,
    pub backoff: Backoff,
}

impl CaClient {
    /// Fetches a certificate now and again at half each one's life, for as long as the proxy
    /// runs. A failed renewal is retried with backoff while the held certificate serves.
    pub fn start(self) -> Certificates {
        let (tx, rx) = watch::channel(None);
        let last_error = Arc::new(parking_lot::Mutex::new(None));
        let handshake = Arc::new(ArcSwapOption::empty());
        let certificates = Certificates {
            current: rx,
            handshake: handshake.clone(),
            last_error: last_error.clone(),
            root_pem: self.root_pem.clone().into(),
            identity: self.identity.clone(),
        };
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                match self.fetch().await {
                    Ok(cert) => {
                        attempt = 0;
                        *last_error.lock() = None;
                        let renew = cert.leaf.renew_at(cert.received);
                        tracing::info!(
                            identity = %cert.identity,
                            serial = %cert.leaf.serial_number,
                            expires = cert.leaf.not_after,
                            "holding a workload certificate"
                        );
                        handshake.store(Some(cert.certified.clone()));
                        if tx.send(Some(Arc::new(cert))).is_err() {
                            return;
                        }
                        let wait = renew
                            .duration_since(SystemTime::now())
                            .unwrap_or(Duration::ZERO);
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        tracing::warn!("{e}; retrying");
                        *last_error.lock() = Some(e.to_string());
                        tokio::time::sleep(self.backoff.delay(attempt)).await;
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        });
        certificates
    }

    async fn fetch(&self) -> Result<WorkloadCertificate, IdentityError> {
        let connect = |source| IdentityError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        };
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.root_pem))
            .domain_name(weft_discovery::CONTROL_PLANE_SAN);
        let channel = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .map_err(connect)?
            .tls_config(tls)
            .map_err(connect)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(connect)?;
        let key = WorkloadKey::generate()?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: key.csr(&self.identity)?,
            validity_duration: self.ttl.map_or(0, |t| t.as_secs() as i64),
        });
        let fresh = self
            .credential_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let bearer = format!("Bearer {}", fresh.as_deref().unwrap_or(&self.credential));
        if let Ok(value) = bearer.parse() {
            request
                .metadata_mut()
                .insert(weft_discovery::credentials::AUTHORIZATION, value);
        }
        let chain = IstioCertificateServiceClient::new(channel)
            .create_certificate(request)
            .await
            .map_err(|status| IdentityError::Refused {
                endpoint: self.endpoint.clone(),
                status,
            })?
            .into_inner()
            .cert_chain;
        let leaf_pem = chain.first().ok_or(IdentityError::EmptyChain)?;
        let leaf = CertInfo::of_der(&chain_der(leaf_pem)?[0])?;
        let found = leaf.identity();
        if found.as_ref() != Some(&self.identity) {
            return Err(IdentityError::WrongIdentity {
                wanted: self.identity.to_string(),
                found: leaf.uri_sans.join(", "),
            });
        }
        // Istio's CA answers leaf, intermediates, root; the client chain omits the root.
        let chain_pem: String = chain
            .iter()
            .take(chain.len().saturating_sub(1).max(1))
            .map(|c| c.trim_end().to_string() + "\n")
            .collect();
        let certified = tls::certified_key(&chain_pem, &key.private_key())?;
        Ok(WorkloadCertificate {
            chain_pem,
            certified,
            leaf,
            identity: self.identity.clone(),
            received: SystemTime::now(),
            key,
        })
    }
}

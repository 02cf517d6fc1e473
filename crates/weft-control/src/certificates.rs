//! istiod's certificate service on 15012: a proxy proves its identity with its pod
//! credential, or on Kubernetes its service account token (which the cluster reviews), and
//! gets a certificate for that identity on its own key.

use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use weft_discovery::ca::istio_certificate_service_server::IstioCertificateService;
use weft_discovery::ca::{IstioCertificateRequest, IstioCertificateResponse};
use weft_discovery::credentials::{bearer_of, AUTHORIZATION};
use weft_security::ca::{Ca, CaError, WORKLOAD_TTL};
use weft_security::credential::Issuer;
use weft_security::Identity;

pub struct CertificateService {
    pub ca: Arc<Ca>,
    pub credentials: Arc<Issuer>,
    /// Vouches for tokens that are not pod credentials (Kubernetes' TokenReview).
    pub authority: Option<Arc<dyn TokenAuthority>>,
    /// The longest lifetime granted (Istio's 24 h unless told otherwise).
    pub max_ttl: Duration,
}

/// Who a token says the caller is, by another authority's word: Kubernetes reviews a
/// service account token for `istio-ca`, as istiod asks it.
pub trait TokenAuthority: Send + Sync + 'static {
    /// The namespace and service account the token was issued to, or why it proves none.
    fn review<'a>(&'a self, token: &'a str) -> Review<'a>;
}

pub type Review<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(String, String), String>> + Send + 'a>,
>;

impl CertificateService {
    /// The identity the call's pod credential, or else its reviewed token, proves.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let presented = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_of)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no pod credential: send it as authorization: Bearer CREDENTIAL (weft proxy --credential-file names the file weft up gave the pod)",
                )
            })?;
        let (namespace, service_account) = match (self.credentials.verify(presented), &self.authority) {
            (Ok(claims), _) => (claims.namespace, claims.service_account),
            (Err(_), Some(authority)) => authority.review(presented).await.map_err(|e| {
                tracing::warn!("refused a certificate request: the token is not one the cluster vouches for: {e}");
                Status::unauthenticated(format!("the service account token does not review: {e}"))
            })?,
            (Err(e), None) => {
                tracing::warn!("refused a certificate request: {e}");
                return Err(Status::unauthenticated(format!("{e}")));
            }
        };
        Identity::new(self.ca.trust_domain(), &namespace, &service_account)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CertificateService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let identity = self.caller(&request).await?;
        let asked = request.into_inner();
        let ttl = match asked.validity_duration {
            s if s > 0 => Duration::from_secs(s as u64).min(self.max_ttl),
            _ => WORKLOAD_TTL.min(self.max_ttl),
        };
        let chain = self.ca.sign(&asked.csr, &identity, ttl).map_err(|e| {
            tracing::warn!(%identity, "refused a certificate request: {e}");
            match e {
                CaError::ForeignIdentity { .. } => Status::permission_denied(e.to_string()),
                _ => Status::invalid_argument(e.to_string()),
            }
        })?;
        tracing::info!(%identity, ttl_s = ttl.as_secs(), "issued a workload certificate");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}

//! `weft control`: holds the config (a watched directory plus the admin API), knows the
//! services and endpoints, and streams each proxy the part of the config it needs.
#![forbid(unsafe_code)]

mod admin;
mod certificates;
pub mod collector;
pub mod config;
mod discovery;
mod encoded;
pub mod mesh;
mod mesh_config;
pub mod metrics;
mod objects;
pub mod registrations;
pub mod store;
mod views;

pub use certificates::{Review, TokenAuthority};
use config::ConfigState;
use discovery::DiscoveryServer;
use mesh::Mesh;
use metrics::Metrics;
use registrations::Registrations;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::ConfigSource;
use tokio::task::JoinHandle;
use weft_discovery::admin::admin_server::AdminServer;
use weft_discovery::ca::istio_certificate_service_server::IstioCertificateServiceServer;
use weft_discovery::credentials::{self, AdminCredential, CredentialError, Token};
use weft_security::ca::{Ca, CaError, PluggedFiles};
use weft_security::credential::{self as pod_credential, Issuer, PodClaims};

pub struct ControlOptions {
    /// The config directory `start` serves (`start_with` takes any source).
    pub config_dir: PathBuf,
    /// A MeshConfig file (istiod's `--meshConfig`), served as ConfigMap istio-system/istio
    /// beneath one applied to the directory.
    pub mesh_config: Option<PathBuf>,
    /// Plaintext discovery and admin (istiod's 15010), an opt-in for tests: a proxy there
    /// only claims who it is, so it registers its workload only with the join token and is
    /// never sent Secrets. `None` (the default): not served.
    pub grpc: Option<SocketAddr>,
    /// The certificate service, discovery and admin over TLS (istiod's 15012); `None` (the
    /// default here; `weft control` serves 15012): not served.
    pub grpc_tls: Option<SocketAddr>,
    /// Where the CA's root is kept, or the plugged-in CA's files.
    pub ca: CaSource,
    /// The trust domain of the SPIFFE identities it signs (Istio's `cluster.local`).
    pub trust_domain: String,
    /// The longest workload certificate lifetime granted (Istio's 24 h).
    pub max_cert_ttl: Duration,
    /// The key pod credentials are signed with (made at first start).
    pub pod_credential_key_file: PathBuf,
    /// Metrics (istiod's 15014).
    pub monitoring: SocketAddr,
    /// The built-in trace collector's Zipkin API, istio-system's `zipkin:9411` in the local
    /// platform (`None`: no collector).
    pub zipkin: Option<SocketAddr>,
    pub trace_limits: collector::Limits,
    /// How long a disconnected proxy's workload stays an endpoint.
    pub endpoint_grace: Duration,
    /// Vouches for callers of the CA whose token is no pod credential (on Kubernetes, the
    /// cluster's TokenReview of a service account token).
    pub token_authority: Option<Arc<dyn TokenAuthority>>,
    /// Whether proxies' announced workloads become endpoints; not where the source lists
    /// the endpoints itself (a Kubernetes cluster's EndpointSlices).
    pub announced_endpoints: bool,
    /// Where announced workloads are kept across restarts (`None`: memory only).
    pub state_file: Option<PathBuf>,
    /// The admin token every admin API call must carry (made at first start).
    pub admin_token_file: PathBuf,
    /// Where the admin identity's credential (certificate chain and key) is kept, for the
    /// CLI to present on the TLS port.
    pub admin_credential_file: PathBuf,
    /// How often the admin credential's remaining life is checked while running: it is
    /// issued afresh (and published again) with less than half its life left.
    pub admin_renewal_check: Duration,
    /// The join token a proxy's Hello must carry to register its workload (made at first
    /// start; the platform hands it to its pods).
    pub join_token_file: PathBuf,
    /// Publish the admin token, and the admin credential for the TLS port, for this user's
    /// CLIs (`$WEFT_HOME/credentials`) once the ports are bound and before anything is
    /// served, and withdraw them when stopped.
    pub publish_admin_token: bool,
}

/// Where the CA's keys come from.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// A root made at first start and kept in this directory.
    SelfSigned(PathBuf),
    /// Istio's plugged-in CA files (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`) in this directory.
    Plugged(PathBuf),
}

impl ControlOptions {
    pub fn new(config_dir: PathBuf) -> ControlOptions {
        let state = config_dir.join(".weft");
        ControlOptions {
            state_file: Some(state.join("workloads.json")),
            grpc_tls: None,
            ca: CaSource::SelfSigned(state.join("ca")),
            trust_domain: weft_security::DEFAULT_TRUST_DOMAIN.into(),
            max_cert_ttl: weft_security::ca::WORKLOAD_TTL,
            pod_credential_key_file: state.join("pod-credential.key"),
            admin_token_file: credentials::admin_token_file(&config_dir),
            admin_credential_file: credentials::admin_credential_file(&config_dir),
            admin_renewal_check: Duration::from_secs(3600),
            join_token_file: credentials::join_token_file(&config_dir),
            publish_admin_token: false,
            config_dir,
            mesh_config: None,
            grpc: None,
            monitoring: ([0, 0, 0, 0], weft_discovery::MONITORING_PORT).into(),
            zipkin: None,
            trace_limits: collector::Limits::default(),
            endpoint_grace: Duration::from_secs(30),
            announced_endpoints: true,
            token_authority: None,
        }
    }
}

impl ControlOptions {
    fn load_ca(&self) -> Result<Ca, CaError> {
        match &self.ca {
            CaSource::SelfSigned(dir) => Ca::load_or_create(dir, &self.trust_domain),
            CaSource::Plugged(dir) => {
                Ca::plugged(&PluggedFiles { dir: dir.clone() }, &self.trust_domain)
            }
        }
    }

    /// The admin identity's credential the control plane will take, made ahead of its
    /// start (the CA's root too, at a first start), as `weft up` does to publish it before
    /// the mesh runs.
    pub fn admin_credential(&self) -> Result<AdminCredential, StartError> {
        admin::admin_credential(&self.load_ca()?, &self.admin_credential_file)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for {what}: {source}{}", hint(source))]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("the CA: {0}")]
    Ca(#[from] CaError),
    #[error("pod credentials: {0}")]
    PodCredential(#[from] pod_credential::CredentialError),
    #[error("serving TLS on {addr}: {detail}")]
    Tls { addr: SocketAddr, detail: String },
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            ": another control plane (or a Zipkin) may be running; stop it or pass --grpc/--monitoring/--zipkin"
        }
        _ => "",
    }
}

/// A running control plane. Dropping it stops it.
pub struct ControlPlane {
    /// The plaintext port, when asked for.
    pub grpc_addr: Option<SocketAddr>,
    /// The TLS port (certificates, discovery, admin), when served.
    pub grpc_tls_addr: Option<SocketAddr>,
    pub ca: Arc<Ca>,
    pod_credentials: Arc<Issuer>,
    pub monitoring_addr: SocketAddr,
    pub zipkin_addr: Option<SocketAddr>,
    pub collector: Arc<collector::Collector>,
    pub state: Arc<ConfigState>,
    /// What the CLI must present (kept in `admin_token_file`).
    pub admin_token: Token,
    pub admin_token_file: PathBuf,
    /// The admin identity's credential, when the TLS port is served; renewed while running.
    admin_credential: Arc<parking_lot::Mutex<Option<AdminCredential>>>,
    pub admin_credential_file: PathBuf,
    published_admin: Option<SocketAddr>,
    /// What a proxy must present to register its workload (kept in `join_token_file`).
    pub join_token: Token,
    pub join_token_file: PathBuf,
    /// The address the admin token is published for, if it is.
    pub published: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    /// Serves the config directory `opts.config_dir`.
    pub async fn start(opts: ControlOptions) -> Result<ControlPlane, StartError> {
        let dir = store::ConfigDir::open(&opts.config_dir)?;
        ControlPlane::start_with(opts, Box::new(dir)).await
    }

    /// Reads the source (a partition with errors is logged and skipped), then serves.
    pub async fn start_with(
        opts: ControlOptions,
        source: Box<dyn ConfigSource>,
    ) -> Result<ControlPlane, StartError> {
        let source: Box<dyn ConfigSource> = match &opts.mesh_config {
            Some(file) => Box::new(mesh_config::WithMeshConfig::new(file, source)?),
            None => source,
        };
        let admin_token = Token::load_or_create(&opts.admin_token_file)?;
        let join_token = Token::load_or_create(&opts.join_token_file)?;
        // A burst of proxies (a node's restart) overflows tokio's accept queue of 128.
        let bind = |what: &'static str, addr: SocketAddr| {
            weft_discovery::listen::bind(addr).map_err(|source| StartError::Bind {
                what,
                addr,
                source,
            })
        };
        let ca = Arc::new(opts.load_ca()?);
        let pod_credentials = Arc::new(Issuer::load_or_create(&opts.pod_credential_key_file)?);
        let grpc = match opts.grpc {
            Some(addr) => Some(bind("plaintext discovery", addr)?),
            None => None,
        };
        let grpc_tls = match opts.grpc_tls {
            Some(addr) => Some(bind("certificates and discovery over TLS", addr)?),
            None => None,
        };
        let grpc_tls_addr = grpc_tls.as_ref().map(|l| l.local_addr().expect("bound"));
        let monitoring = bind("metrics", opts.monitoring)?;
        let zipkin = match opts.zipkin {
            Some(addr) => Some(bind("the trace collector", addr)?),
            None => None,
        };
        let zipkin_addr = zipkin.as_ref().map(|l| l.local_addr().expect("bound"));
        let grpc_addr = grpc.as_ref().map(|l| l.local_addr().expect("bound"));
        let monitoring_addr = monitoring.local_addr().expect("bound");
        let admin_credential = match grpc_tls_addr {
            Some(_) => Some(admin::admin_credential(&ca, &opts.admin_credential_file)?),
            None => None,
        };
        let published = match (opts.publish_admin_token, grpc_addr) {
            (true, Some(addr)) => {
                let local = credentials::local_address(addr);
                credentials::publish(local, &admin_token)?;
                Some(local)
            }
            _ => None,
        };
        let published_admin = match (opts.publish_admin_token, grpc_tls_addr, &admin_credential) {
            (true, Some(addr), Some(credential)) => {
                let local = credentials::local_address(addr);
                credentials::publish_admin(local, credential)?;
                Some(local)
            }
            _ => None,
        };
        let metrics = Arc::new(Metrics::default());
        let registrations = Registrations::new(opts.state_file.clone(), opts.endpoint_grace)
            .announcing(opts.announced_endpoints);
        let state = Arc::new(ConfigState::new(
            Mesh::new(metrics.clone()),
            source,
            registrations,
            join_token.clone(),
        ));
        state.reload(None).await?;
        state.restore_registrations();
        let watched = state.clone();
        let discovery = |require_certificate| discovery::DiscoveryService {
            state: state.clone(),
            require_certificate,
        };
        let admin = || {
            AdminServer::with_interceptor(
                admin::AdminService {
                    state: state.clone(),
                    root_cert: ca.root_pem().to_string(),
                },
                admin::Authenticate {
                    token: admin_token.clone(),
                    kept_in: opts.admin_token_file.clone(),
                    admin_uri: weft_security::ca::admin_uri(ca.trust_domain()),
                },
            )
        };
        let collector = Arc::new(collector::Collector::new(opts.trace_limits));
        let mut tasks = vec![
            tokio::spawn(metrics::serve(monitoring, metrics, state.clone())),
            tokio::spawn(state.clone().persist_registrations()),
            tokio::spawn(async move {
                let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
                let _watch = watched.source.watch(tx);
                // The first report re-reads everything, catching changes made between the
                // read above and the watch.
                while let Some(partitions) = changed.recv().await {
                    if let Err(e) = watched.reload(partitions.as_ref()).await {
                        tracing::error!("{e}");
                    }
                }
            }),
        ];
        if let Some(listener) = grpc {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let (plain_discovery, plain_admin) = (discovery(false), admin());
            tasks.push(tokio::spawn(async move {
                let served = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(10)))
                    .add_service(DiscoveryServer::new(plain_discovery))
                    .add_service(plain_admin)
                    .serve_with_incoming(incoming)
                    .await;
                if let Err(e) = served {
                    tracing::error!("discovery server stopped: {e}");
                }
            }));
        }
        if let Some(listener) = zipkin {
            tasks.push(tokio::spawn(collector::serve(listener, collector.clone())));
        }
        let admin_credential = Arc::new(parking_lot::Mutex::new(admin_credential));
        if grpc_tls_addr.is_some() {
            tasks.push(tokio::spawn(admin::keep_admin_credential(
                ca.clone(),
                opts.admin_credential_file.clone(),
                opts.admin_renewal_check,
                published_admin,
                admin_credential.clone(),
            )));
        }
        if let (Some(listener), Some(addr)) = (grpc_tls, grpc_tls_addr) {
            let tls = tls_config(&ca).map_err(|detail| StartError::Tls { addr, detail })?;
            let certificates = certificates::CertificateService {
                ca: ca.clone(),
                credentials: pod_credentials.clone(),
                authority: opts.token_authority.clone(),
                max_ttl: opts.max_cert_ttl,
            };
            let mut server = tonic::transport::Server::builder()
                .tls_config(tls)
                .map_err(|e| StartError::Tls {
                    addr,
                    detail: e.to_string(),
                })?
                .http2_keepalive_interval(Some(Duration::from_secs(10)));
            let router = server
                .add_service(IstioCertificateServiceServer::new(certificates))
                .add_service(DiscoveryServer::new(discovery(true)))
                .add_service(admin());
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming(incoming).await {
                    tracing::error!("the TLS server stopped: {e}");
                }
            }));
        }
        Ok(ControlPlane {
            grpc_addr,
            grpc_tls_addr,
            ca,
            pod_credentials,
            monitoring_addr,
            zipkin_addr,
            collector,
            state,
            admin_token,
            admin_token_file: opts.admin_token_file,
            admin_credential,
            admin_credential_file: opts.admin_credential_file,
            published_admin,
            join_token,
            join_token_file: opts.join_token_file,
            published,
            tasks,
        })
    }
}

/// 15012's TLS: a serving certificate from the mesh's own CA for istiod's name, and client
/// certificates (optional: a proxy's first call has none) verified against the root.
fn tls_config(ca: &Ca) -> Result<tonic::transport::ServerTlsConfig, String> {
    // A year: it is made afresh at every start, and proxies trust the root, not this.
    let (chain, key) = ca
        .serving(
            &[weft_discovery::CONTROL_PLANE_SAN],
            Duration::from_secs(365 * 24 * 3600),
        )
        .map_err(|e| e.to_string())?;
    let identity = tonic::transport::Identity::from_pem(chain.concat(), key);
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(tonic::transport::Certificate::from_pem(ca.root_pem()))
        .client_auth_optional(true))
}

impl ControlPlane {
    /// A credential proving `claims` to this control plane, for the platform to hand a pod.
    pub fn issue_pod_credential(
        &self,
        claims: &PodClaims,
    ) -> Result<String, pod_credential::CredentialError> {
        self.pod_credentials.issue(claims)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(addr) = self.published {
            credentials::unpublish(addr, &self.admin_token);
        }
        if let (Some(addr), Some(credential)) =
            (self.published_admin, self.admin_credential.lock().as_ref())
        {
            credentials::unpublish_admin(addr, credential);
        }
    }
}

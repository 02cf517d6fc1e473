//! `weft control`: the control plane as a process.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_control::{CaSource, ControlOptions, ControlPlane};
use weft_dashboard::source::TracingSource;
use weft_dashboard::{Dashboard, DashboardOptions};
use weft_platform::stop::StopSignals;

#[derive(clap::Args)]
pub struct ControlArgs {
    /// The config directory: read at start, watched, and where applied config is stored.
    #[arg(long, env = "WEFT_CONFIG_DIR", default_value = "weft-config")]
    config_dir: PathBuf,
    /// A MeshConfig file, as istiod's `--meshConfig`: the MeshConfig YAML (the `istio`
    /// ConfigMap's `mesh` key) or that ConfigMap; watched. An `istio` ConfigMap applied to
    /// the config directory wins over it.
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// Also serve discovery and the admin API in plaintext here (istiod's 15010), for tests:
    /// a proxy there only claims who it is, so it registers its workload only with the join
    /// token and is never sent Secrets. Off unless given.
    #[arg(long, value_name = "ADDR")]
    grpc: Option<SocketAddr>,
    /// The certificate service (a pod's credential buys a certificate for its identity),
    /// discovery and the admin API over TLS, as istiod's 15012.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:15012")]
    grpc_tls: SocketAddr,
    /// Serve no TLS port (plaintext tests only; needs --grpc).
    #[arg(long, requires = "grpc")]
    no_grpc_tls: bool,
    /// Sign with this plugged-in CA rather than the root kept in the config directory's
    /// `.weft/ca`: a directory of `ca-cert.pem`, `ca-key.pem`, `root-cert.pem` and
    /// `cert-chain.pem`, Istio's `cacerts` layout.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// Only when --ca-dir holds the files: otherwise keep to the root in `.weft/ca`, as
    /// istiod does with an optional `cacerts` Secret.
    #[arg(long, requires = "ca_dir")]
    ca_dir_optional: bool,
    /// The trust domain of workload identities (`spiffe://TRUST-DOMAIN/ns/…/sa/…`).
    #[arg(long, default_value = weft_security::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The longest workload certificate lifetime granted, in seconds (Istio: 24 h).
    #[arg(long, value_name = "SECONDS", default_value_t = 24 * 3600)]
    max_cert_ttl: u64,
    /// Metrics (`/metrics`) and readiness (`/ready`).
    #[arg(long, default_value = "0.0.0.0:15014")]
    monitoring: SocketAddr,
    /// Run the built-in trace collector here: Zipkin's v2 API (`POST /api/v2/spans` and the
    /// query API), the `zipkin.istio-system:9411` Istio's proxies send spans to.
    #[arg(long, value_name = "ADDR")]
    zipkin: Option<SocketAddr>,
    /// Seconds a disconnected proxy's workload stays an endpoint, so restarts and network
    /// blips do not take endpoints away.
    #[arg(long, default_value_t = 30)]
    endpoint_grace: u64,
    /// Serve the dashboard here (Kiali's port). Off loopback, its API needs the admin token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:20001")]
    dashboard: SocketAddr,
    /// Serve no dashboard.
    #[arg(long, conflicts_with = "dashboard")]
    no_dashboard: bool,
    /// The dashboard reads this Prometheus (http://HOST:PORT) rather than scraping every
    /// proxy's 15020 itself.
    #[arg(long, value_name = "URL")]
    prometheus: Option<http::Uri>,
    /// The dashboard's trace pages read this Zipkin or Jaeger (http://HOST:PORT[/BASE],
    /// its query API) rather than the built-in collector.
    #[arg(long, value_name = "URL")]
    tracing_url: Option<http::Uri>,
    /// What serves --tracing-url: Zipkin's v2 query API, or Jaeger's (port 16686; Istio's
    /// addon serves it under /jaeger).
    #[arg(long, value_enum, default_value_t = TracingProvider::Zipkin, requires = "tracing_url")]
    tracing_provider: TracingProvider,
    /// Seconds between the dashboard aggregator's scrapes of every proxy (Istio's
    /// Prometheus addon: 15).
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    scrape_interval: u64,
    /// Serve the sidecar injection webhook here (istiod's 15017, `POST /inject`), over TLS
    /// with a certificate from the mesh's CA for istiod's service names.
    #[arg(long, value_name = "ADDR")]
    webhook: Option<SocketAddr>,
    /// The image injected sidecars run (its entrypoint is weft).
    #[arg(long, requires = "webhook")]
    inject_image: Option<String>,
    /// Read config and the registry from the Kubernetes cluster, as istiod does: Services,
    /// EndpointSlices, Pods, Namespaces and Istio's resources, watched (in a pod, with its
    /// service account; else $KUBECONFIG or ~/.kube/config). The config directory then
    /// holds only the control plane's state.
    #[arg(long)]
    kubernetes: bool,
    /// The kubeconfig to reach the cluster with.
    #[arg(long, value_name = "FILE", requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// Who this replica is to the others contending for the writers' lease (the pod's
    /// name; default: the host's name and this process's id).
    #[arg(long, env = "POD_NAME", requires = "kubernetes")]
    pod_name: Option<String>,
}

/// The injection webhook's listener, serving with a certificate from the mesh's CA.
async fn webhook(
    addr: SocketAddr,
    ca: &weft_security::ca::Ca,
    image: Option<String>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tls = weft_kube::webhook::tls_config(ca)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the injection webhook"))?;
    let defaults = weft_kube::inject::Options::default();
    let opts = weft_kube::inject::Options {
        image: image.unwrap_or(defaults.image),
        trust_domain: ca.trust_domain().to_string(),
        ..defaults
    };
    tracing::info!(%addr, "the injection webhook serves POST /inject");
    Ok(tokio::spawn(weft_kube::webhook::serve(
        listener,
        std::sync::Arc::new(tls),
        std::sync::Arc::new(opts),
    )))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TracingProvider {
    Zipkin,
    Jaeger,
}

pub fn run(args: ControlArgs) -> anyhow::Result<()> {
    crate::proxy::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    crate::allocator::return_freed_memory();
    runtime.block_on(async move {
        // Before starting, so a SIGTERM meanwhile still withdraws the published token.
        let mut stop = StopSignals::install().context("listening for SIGTERM and SIGINT")?;
        let defaults = ControlOptions::new(args.config_dir.clone());
        let opts = ControlOptions {
            grpc: args.grpc,
            grpc_tls: (!args.no_grpc_tls).then_some(args.grpc_tls),
            ca: match &args.ca_dir {
                Some(dir) if !args.ca_dir_optional || dir.join("ca-cert.pem").exists() => {
                    CaSource::Plugged(dir.clone())
                }
                _ => defaults.ca.clone(),
            },
            trust_domain: args.trust_domain.clone(),
            max_cert_ttl: Duration::from_secs(args.max_cert_ttl.max(1)),
            monitoring: args.monitoring,
            zipkin: args.zipkin,
            mesh_config: args.mesh_config.clone(),
            endpoint_grace: Duration::from_secs(args.endpoint_grace),
            publish_admin_token: true,
            // On Kubernetes, EndpointSlices say which pods serve; proxies do not.
            announced_endpoints: !args.kubernetes,
            ..defaults
        };
        let mut writer = None;
        let control = if args.kubernetes {
            let client = weft_kube::cluster::client(args.kubeconfig.as_deref()).await?;
            tracing::info!("waiting for the first list of each watched kind from the API server");
            let source = weft_kube::cluster::KubeSource::start(client.clone()).await;
            let namespaces = Box::new(source.namespaces());
            let reviewer = weft_kube::cluster::token_review::KubeTokenReview::new(client.clone());
            let opts = ControlOptions {
                token_authority: Some(std::sync::Arc::new(reviewer)),
                ..opts
            };
            let control = ControlPlane::start_with(opts, Box::new(source)).await?;
            let identity = args.pod_name.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            let state = control.state.clone();
            let problems: weft_kube::cluster::leader::Problems = Box::new(move || {
                state
                    .broken_files()
                    .into_iter()
                    .map(|(partition, broken)| (partition, broken.errors))
                    .collect()
            });
            writer = Some(tokio::spawn(weft_kube::cluster::leader::run(
                client,
                identity,
                control.ca.root_pem().to_string(),
                namespaces,
                problems,
                Default::default(),
            )));
            control
        } else {
            ControlPlane::start(opts).await?
        };
        let _webhook = match args.webhook {
            Some(addr) => Some(webhook(addr, &control.ca, args.inject_image.clone()).await?),
            None => None,
        };
        let dashboard = match args.no_dashboard {
            true => None,
            false => Some(
                Dashboard::start(
                    DashboardOptions {
                        listen: args.dashboard,
                        prometheus: args.prometheus.clone(),
                        tracing: match (&args.tracing_url, args.tracing_provider) {
                            (None, _) => TracingSource::Builtin,
                            (Some(url), TracingProvider::Zipkin) => {
                                TracingSource::Zipkin(url.clone())
                            }
                            (Some(url), TracingProvider::Jaeger) => {
                                TracingSource::Jaeger(url.clone())
                            }
                        },
                        scrape_interval: Duration::from_secs(args.scrape_interval.max(1)),
                        ..DashboardOptions::default()
                    },
                    &control,
                )
                .await?,
            ),
        };
        tracing::info!(
            grpc = ?control.grpc_addr, grpc_tls = ?control.grpc_tls_addr, monitoring = %control.monitoring_addr,
            zipkin = ?control.zipkin_addr, dashboard = ?dashboard.as_ref().map(|d| d.addr),
            config = %args.config_dir.display(), objects = control.state.mesh().objects().len(),
            "weft control listening"
        );
        if let Some(local) = control.published {
            tracing::info!(
                token = %control.admin_token_file.display(),
                "the plaintext admin API needs the admin token; this user's CLIs at http://{local} find it"
            );
        }
        if let Some(tls) = control.grpc_tls_addr {
            tracing::info!(
                credential = %control.admin_credential_file.display(),
                "the admin API takes the admin identity's certificate; this user's CLIs at {} find it",
                weft_discovery::credentials::local_address(tls)
            );
        }
        tracing::info!(join_token = %control.join_token_file.display(),
            "proxies register their workloads with the join token (weft proxy --join-token-file)");
        stop.recv().await;
        if let Some(writer) = writer {
            writer.abort();
        }
        tracing::info!("stopping: the published admin credentials are withdrawn");
        Ok(())
    })
}

//! The Weft sidecar proxy: transparent and explicit outbound capture, inbound capture,
//! Istio routing and resilience, access logs, Istio's metrics, admin, health and stats ports;
//! in gateway mode also
//! Istio's ingress gateway.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod drain;
pub mod gateway;
pub mod http;
pub mod identity;
mod listener;
pub mod model;
pub mod security;
pub mod tcp;
pub mod telemetry;
pub mod transport;
pub mod upstream;
pub mod workers;
pub mod workload;

use ::http::HeaderValue;
use config::ConfigStore;
use drain::Drain;
use model::protocol::Protocol;
use model::registry::Discovery;
use std::net::SocketAddr;
use std::sync::Arc;
use telemetry::access_log::AccessLog;
use telemetry::metrics;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use transport::orig_dst::OriginalDst;
use upstream::config::{LbPolicy, Limits};
use upstream::{Cluster, ClusterConfig};
use weft_api::types::OutboundTrafficMode;

/// What every connection handler shares.
pub struct Shared {
    pub config: Arc<ConfigStore>,
    pub access_log: AccessLog,
    pub metrics: Arc<metrics::Metrics>,
    pub orig_dst: Arc<dyn OriginalDst>,
    /// Where inbound traffic goes when the connection carries no original destination.
    pub inbound_target: Option<SocketAddr>,
    pub inbound: Arc<Cluster>,
    pub passthrough: Arc<Cluster>,
    /// What responses' `server` header is overwritten with; `None` leaves it alone.
    pub server: Option<ServerNames>,
    pub drain: Arc<Drain>,
    /// This workload's peer metadata, for the sidecar at the other end of each call.
    pub own_metadata: telemetry::peer::OwnMetadata,
    pub tracer: telemetry::trace::Tracer,
    /// Istio's mTLS, when the proxy has a workload identity.
    pub tls: Option<Arc<transport::tls::MeshTls>>,
}

/// Istio's `proxyHeaders.server`: the proxy's own setting, which MeshConfig's
/// `defaultConfig.proxyHeaders.server` overrides; the default is Istio's behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerHeader {
    /// Leave `server` as the upstream sent it, or absent (Envoy's PASS_THROUGH).
    pub disabled: bool,
    /// Overwrite `server` with this in every direction. Unset: `envoy` on outbound and
    /// `istio-envoy` on inbound and gateways, as Istio configures its listeners.
    pub value: Option<String>,
}

/// The `server` values per direction, made once when the proxy starts.
#[derive(Debug, Clone)]
pub struct ServerNames {
    pub outbound: HeaderValue,
    pub inbound_and_gateway: HeaderValue,
}

impl ServerHeader {
    pub fn names(&self) -> Result<Option<ServerNames>, StartError> {
        if self.disabled {
            return Ok(None);
        }
        // An empty value is unset, as Istio reads it.
        let Some(value) = self.value.as_ref().filter(|v| !v.is_empty()) else {
            return Ok(Some(ServerNames {
                outbound: HeaderValue::from_static("envoy"),
                inbound_and_gateway: HeaderValue::from_static("istio-envoy"),
            }));
        };
        let value =
            HeaderValue::from_str(value).map_err(|_| StartError::ServerHeader(value.clone()))?;
        Ok(Some(ServerNames {
            outbound: value.clone(),
            inbound_and_gateway: value,
        }))
    }
}

pub struct ProxyOptions {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub health: SocketAddr,
    /// Istio's merged-metrics port: `/stats/prometheus`, Envoy's stats plus the proxy
    /// process's.
    pub stats: SocketAddr,
    /// Envoy's Prometheus port (15090): Istio's and Envoy's stats.
    pub envoy_stats: SocketAddr,
    pub workload: workload::Workload,
    pub outbound_policy: OutboundTrafficMode,
    pub access_log: AccessLog,
    pub orig_dst: Arc<dyn OriginalDst>,
    pub inbound_target: Option<SocketAddr>,
    pub set_log_level: Option<admin::SetLogLevel>,
    /// The largest compiled route regex accepted; a config with a larger one is rejected.
    pub regex_size_limit: usize,
    /// Gateway mode: listen on the ports of the Gateway servers that select the workload.
    pub gateway: Option<gateway::GatewayOptions>,
    pub server_header: ServerHeader,
    /// The app's own metrics, merged into 15020's.
    pub app_metrics: Option<admin::AppMetrics>,
    /// The workload certificate, when the proxy has an identity (`/config_dump` shows it).
    pub certificates: Option<identity::Certificates>,
    /// The threads that serve connections; none: the runtime `start` runs on.
    pub workers: workers::Workers,
}

impl ProxyOptions {
    /// Every listener on `addr` (port 0: a free port each), as tests run several proxies.
    pub fn bind_all(&mut self, addr: SocketAddr) {
        for port in [
            &mut self.outbound,
            &mut self.inbound,
            &mut self.admin,
            &mut self.health,
            &mut self.stats,
            &mut self.envoy_stats,
        ] {
            *port = addr;
        }
    }

    /// Istio's ports: outbound 15001 and inbound 15006 on all addresses, admin on
    /// 127.0.0.1:15000, health on 15021, metrics on 15020 (merged) and 15090 (Envoy's).
    pub fn istio_defaults(workload: workload::Workload) -> ProxyOptions {
        ProxyOptions {
            outbound: ([0, 0, 0, 0], 15001).into(),
            inbound: ([0, 0, 0, 0], 15006).into(),
            admin: ([127, 0, 0, 1], 15000).into(),
            health: ([0, 0, 0, 0], 15021).into(),
            stats: ([0, 0, 0, 0], 15020).into(),
            envoy_stats: ([0, 0, 0, 0], 15090).into(),
            workload,
            outbound_policy: OutboundTrafficMode::RegistryOnly,
            access_log: AccessLog::Stdout(telemetry::access_log::ISTIO_TEXT.clone()),
            orig_dst: Arc::new(transport::orig_dst::SoOriginalDst),
            inbound_target: None,
            set_log_level: None,
            regex_size_limit: model::matcher::DEFAULT_REGEX_SIZE_LIMIT,
            gateway: None,
            server_header: ServerHeader::default(),
            app_metrics: None,
            certificates: None,
            workers: workers::Workers::default(),
        }
    }
}

/// A running proxy. Dropping it stops its listeners.
pub struct Proxy {
    pub outbound_addr: SocketAddr,
    pub inbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub stats_addr: SocketAddr,
    pub envoy_stats_addr: SocketAddr,
    pub config: Arc<ConfigStore>,
    /// Notified by `POST /quitquitquit`.
    pub quit: Arc<Notify>,
    drain: Arc<Drain>,
    tasks: Vec<JoinHandle<()>>,
    /// Held for as long as the proxy runs: the workers stop when the last clone goes.
    _workers: workers::Workers,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for {what}: {}", bind_hint(source))]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0:?} cannot be a server header value: use visible ASCII characters")]
    ServerHeader(String),
    #[error("cannot serve mTLS: {0} (is --root-cert the mesh root the control plane wrote?)")]
    Tls(#[from] weft_security::tls::TlsError),
}

fn bind_hint(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{e}: another process (another proxy?) listens there; stop it or pick another port"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("{e}: ports below 1024 need root or CAP_NET_BIND_SERVICE")
        }
        std::io::ErrorKind::AddrNotAvailable => format!("{e}: no interface has that address"),
        _ => e.to_string(),
    }
}

impl Proxy {
    /// Binds every port and starts serving; the config store starts empty (not ready).
    pub async fn start(opts: ProxyOptions) -> Result<Proxy, StartError> {
        let server = opts.server_header.names()?;
        let bind = |what: &'static str, addr: SocketAddr| {
            weft_discovery::listen::bind(addr).map_err(|source| StartError::Bind {
                what,
                addr,
                source,
            })
        };
        let outbound = bind("outbound capture", opts.outbound)?;
        let inbound = bind("inbound capture", opts.inbound)?;
        let admin = bind("admin", opts.admin)?;
        let health = bind("health", opts.health)?;
        let stats = bind("stats", opts.stats)?;
        let envoy_stats = bind("Envoy's stats", opts.envoy_stats)?;
        let envoy_stats_addr = envoy_stats
            .local_addr()
            .expect("bound listener has an address");
        let addr = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
        let (outbound_addr, inbound_addr, admin_addr, health_addr, stats_addr) = (
            addr(&outbound),
            addr(&inbound),
            addr(&admin),
            addr(&health),
            addr(&stats),
        );
        let tls = match &opts.certificates {
            Some(certs) => Some(Arc::new(transport::tls::MeshTls::new(
                &certs.root_pem,
                Arc::new(certs.clone()),
                &certs.identity,
            )?)),
            None => None,
        };
        let metrics = Arc::new(
            metrics::Metrics::new(&opts.workload)
                .with_principal(tls.as_ref().map(|t| t.own.clone())),
        );
        let own_metadata = telemetry::peer::OwnMetadata::new(&opts.workload);
        let (reporter, export) = telemetry::trace::export::Reporter::new(metrics.trace_stats());
        let tracer =
            telemetry::trace::Tracer::new(&opts.workload, own_metadata.node_id(), reporter);
        let config = Arc::new(ConfigStore::new(
            opts.workload,
            opts.outbound_policy,
            opts.regex_size_limit,
        ));
        let drain = Arc::new(Drain::default());
        let shared = Arc::new(Shared {
            config: config.clone(),
            access_log: opts.access_log,
            metrics: metrics.clone(),
            orig_dst: opts.orig_dst,
            inbound_target: opts.inbound_target,
            inbound: passthrough_cluster("inbound|||"),
            passthrough: passthrough_cluster("PassthroughCluster"),
            server,
            drain: drain.clone(),
            own_metadata,
            tracer,
            tls,
        });
        let quit = Arc::new(Notify::new());
        let admin_state = Arc::new(admin::Admin {
            config: config.clone(),
            app_metrics: opts.app_metrics,
            certificates: opts.certificates,
            quit: quit.clone(),
            set_log_level: opts.set_log_level,
            metrics,
            drain: drain.clone(),
        });
        let mut tasks = listener::spawn(
            &opts.workers,
            outbound,
            &shared,
            transport::conn::Direction::Outbound,
        );
        tasks.extend(listener::spawn(
            &opts.workers,
            inbound,
            &shared,
            transport::conn::Direction::Inbound,
        ));
        tasks.extend([
            tokio::spawn(admin::serve(admin, admin_state.clone(), admin::Port::Admin)),
            tokio::spawn(admin::serve(
                health,
                admin_state.clone(),
                admin::Port::Health,
            )),
            tokio::spawn(admin::serve(stats, admin_state.clone(), admin::Port::Stats)),
            tokio::spawn(admin::serve(
                envoy_stats,
                admin_state,
                admin::Port::EnvoyStats,
            )),
            tokio::spawn(export),
        ]);
        if let Some(options) = opts.gateway {
            tasks.push(tokio::spawn(gateway::manage(
                shared,
                options,
                opts.workers.clone(),
            )));
        }
        Ok(Proxy {
            outbound_addr,
            inbound_addr,
            admin_addr,
            health_addr,
            stats_addr,
            envoy_stats_addr,
            config,
            quit,
            drain,
            tasks,
            _workers: opts.workers,
        })
    }

    /// Starts draining ([`drain`]): the inbound and gateway listeners close, their
    /// connections are asked to close once their requests finish, readiness fails. The
    /// caller decides how long to wait before dropping the proxy. `false` when a drain had
    /// already started.
    pub fn drain(&self) -> bool {
        let started = self.drain.start();
        if started {
            tracing::info!("draining: inbound listeners closed, connections asked to close");
        }
        started
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn passthrough_cluster(name: &str) -> Arc<Cluster> {
    Arc::new(Cluster::new(
        ClusterConfig {
            name: name.into(),
            service: name.into(),
            port: 0,
            subset: None,
            protocol: Protocol::Unknown,
            discovery: Discovery::Passthrough,
            mesh_internal: false,
            endpoints: Vec::new(),
            lb: LbPolicy::Passthrough,
            limits: Limits::default(),
            outlier: None,
            destination_rules: Vec::new(),
            unusable: None,
            tls: upstream::config::UpstreamTls::Plaintext,
        },
        None,
    ))
}

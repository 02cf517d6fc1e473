//! `weft proxy`: the sidecar, fed by a control plane or a config directory.

use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::{reload, EnvFilter};
use weft_api::types::OutboundTrafficMode;
use weft_discovery::credentials::Token;
use weft_discovery::discovery::Hello;
use weft_proxy::config::{FileSource, StreamSource};
use weft_proxy::gateway::GatewayOptions;
use weft_proxy::identity::CaClient;
use weft_proxy::telemetry::access_log::{AccessLog, ISTIO_JSON, ISTIO_TEXT};
use weft_proxy::transport::orig_dst::{NoOriginalDst, SoOriginalDst};
use weft_proxy::workload::{parse_labels, Workload};
use weft_proxy::{Proxy, ProxyOptions, ServerHeader};

#[derive(clap::Args)]
pub struct ProxyArgs {
    /// Directory of Istio YAML/JSON files, watched and re-read on change: for running
    /// without a control plane.
    #[arg(
        long,
        env = "WEFT_CONFIG_DIR",
        required_unless_present = "control_plane",
        conflicts_with = "control_plane"
    )]
    config: Option<PathBuf>,
    /// The control plane to follow: `https://HOST:15012` with --credential-file and the
    /// mesh root, or a plaintext `HOST:15010` a control plane serves when asked (--grpc).
    #[arg(long, env = "WEFT_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// The workload's IP, announced to the control plane so services that select the
    /// workload's labels route to it (Istio's INSTANCE_IP).
    #[arg(long, env = "INSTANCE_IP")]
    address: Option<String>,
    /// The mesh's join token (the control plane's `.weft/join.token`, handed to pods by the
    /// platform): without it the control plane sends config but registers no endpoint.
    #[arg(long, env = "WEFT_JOIN_TOKEN_FILE", requires = "control_plane")]
    join_token_file: Option<PathBuf>,
    /// The pod credential the platform gave this pod (`weft up` writes one per pod): with it
    /// the proxy asks the control plane's CA on 15012 for a certificate for its namespace
    /// and service account, renews it at half its life, and follows the control plane over
    /// 15012's TLS with it.
    #[arg(long, env = "WEFT_CREDENTIAL_FILE", requires_all = ["control_plane", "root_cert"])]
    credential_file: Option<PathBuf>,
    /// Istio's file-mounted certificates instead of the CA: DIR/cert-chain.pem, key.pem and
    /// root-cert.pem (as Istio mounts them in /etc/certs). The identity is the chain's SPIFFE
    /// ID; nothing renews it.
    #[arg(long, value_name = "DIR", conflicts_with = "credential_file")]
    certs: Option<PathBuf>,
    /// The mesh's root certificate (Istio mounts it as `root-cert.pem`): 15012 must chain
    /// to it.
    #[arg(long, env = "WEFT_ROOT_CERT", requires = "credential_file")]
    root_cert: Option<PathBuf>,
    /// The CA (Istio's CA_ADDR), `HOST:15012`. Default: the control plane's host, port 15012.
    #[arg(long, env = "CA_ADDR", requires = "credential_file")]
    ca_address: Option<String>,
    /// The mesh's trust domain, which the certificate's SPIFFE ID must name.
    #[arg(long, env = "TRUST_DOMAIN", default_value = weft_security::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The certificate lifetime to ask for (Istio's SECRET_TTL); the CA caps it. Default:
    /// the CA's (24 h).
    #[arg(long, env = "SECRET_TTL", value_parser = parse_duration, requires = "credential_file")]
    secret_ttl: Option<Duration>,
    /// The workload's namespace, as the pod's.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The workload's name, as Istio's `source_workload`: the Deployment's, not the pod's
    /// (Istio's ISTIO_META_WORKLOAD_NAME). Defaults to the pod's name.
    #[arg(long, env = "WEFT_WORKLOAD_NAME", default_value = "")]
    workload_name: String,
    /// The pod's name, unique within the namespace: how proxy-status tells proxies apart.
    /// Defaults to the workload's name.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod_name: String,
    /// The workload's labels: `app=reviews,version=v2`.
    #[arg(long, env = "WEFT_LABELS", default_value = "")]
    labels: String,
    /// The pod's labels as Kubernetes' downward API writes them (`key="value"` lines; the
    /// injector mounts them at /etc/istio/pod/labels); --labels adds to them.
    #[arg(long, value_name = "FILE")]
    labels_file: Option<PathBuf>,
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    #[arg(long, default_value = "0.0.0.0:15001")]
    outbound: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15006")]
    inbound: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:15021")]
    health: SocketAddr,
    /// Istio's merged-metrics port: `GET /stats/prometheus`.
    #[arg(long, default_value = "0.0.0.0:15020")]
    stats: SocketAddr,
    /// Envoy's Prometheus port: `GET /stats/prometheus` without the process's metrics.
    #[arg(long, default_value = "0.0.0.0:15090")]
    envoy_stats: SocketAddr,
    /// Where inbound traffic goes when it was not redirected by iptables.
    #[arg(long)]
    inbound_target: Option<SocketAddr>,
    /// Merge the app's own metrics into 15020's, as Istio does for pods annotated
    /// `prometheus.io/scrape`: `IP:PORT/PATH`, say 127.0.0.1:9080/metrics.
    #[arg(long, value_name = "IP:PORT/PATH", value_parser = parse_app_metrics)]
    app_metrics: Option<weft_proxy::admin::AppMetrics>,
    /// REGISTRY_ONLY (Weft's default: only mesh services and ServiceEntry hosts) or ALLOW_ANY.
    #[arg(long, default_value = "REGISTRY_ONLY", value_parser = parse_policy)]
    outbound_traffic_policy: OutboundTrafficMode,
    /// `stdout` (Istio's TEXT format), `json` (Istio's JSON format, to stdout) or `off`.
    #[arg(long, default_value = "stdout", value_parser = ["stdout", "text", "json", "off"])]
    access_log: String,
    /// Data-plane worker threads, each with its own connections (as Envoy's --concurrency).
    #[arg(long, env = "WEFT_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Reject config whose route regexes compile to more than this many bytes (Envoy's
    /// `re2.max_program_size`): a guard against regexes that cost memory and time.
    #[arg(long, default_value_t = weft_proxy::model::matcher::DEFAULT_REGEX_SIZE_LIMIT)]
    max_regex_size: usize,
    /// Put this mark (SO_MARK) on the proxy's own connections, so the pod's iptables rules
    /// let them out uncaptured (what weft up's pods use; istio-init exempts a uid instead).
    #[arg(long)]
    upstream_mark: Option<u32>,
    /// Do not ask the kernel for original destinations (explicit proxy mode only).
    #[arg(long)]
    no_capture: bool,
    /// Run as an ingress gateway: listen on the ports of the Gateway servers whose
    /// `selector` matches --labels (e.g. `istio=ingressgateway`), routing by the
    /// VirtualServices bound to them with `gateways:`.
    #[arg(long)]
    gateway: bool,
    /// The address the gateway's listeners bind.
    #[arg(long, default_value = "0.0.0.0", requires = "gateway")]
    gateway_address: IpAddr,
    /// Overwrite responses' `server` header with this value (Istio's MeshConfig
    /// `defaultConfig.proxyHeaders.server.value`; by default `envoy` outbound and
    /// `istio-envoy` inbound and on gateways).
    #[arg(long, conflicts_with = "no_server_header")]
    server_header: Option<String>,
    /// Leave responses' `server` header as the upstream sent it (Istio's
    /// `proxyHeaders.server.disabled: true`).
    #[arg(long)]
    no_server_header: bool,
    /// On SIGTERM or Ctrl-C, drain this long before exiting (Istio's
    /// `terminationDrainDuration`): inbound listeners close, requests in flight finish,
    /// what still runs at the end is cut. `5s`, `500ms`, `1m`; a second signal exits at once.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_duration: Duration,
}

/// A duration as Istio writes them: a number and `ms`, `s` or `m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: write a whole number and a unit: 5s, 500ms, 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: the unit is ms, s or m (5s, 500ms, 1m)")),
    }
}

fn parse_app_metrics(s: &str) -> Result<weft_proxy::admin::AppMetrics, String> {
    let (addr, path) = s.find('/').map_or((s, "/metrics"), |i| (&s[..i], &s[i..]));
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not IP:PORT (say 127.0.0.1:9080/metrics)"))?;
    Ok(weft_proxy::admin::AppMetrics {
        addr,
        path: path.to_string(),
    })
}

fn parse_policy(s: &str) -> Result<OutboundTrafficMode, String> {
    match s.to_ascii_uppercase().as_str() {
        "REGISTRY_ONLY" => Ok(OutboundTrafficMode::RegistryOnly),
        "ALLOW_ANY" => Ok(OutboundTrafficMode::AllowAny),
        _ => Err("use REGISTRY_ONLY or ALLOW_ANY".into()),
    }
}

/// Logs to stderr at `WEFT_LOG` (default `info`); the handle changes the level at run time.
pub fn init_logging() -> reload::Handle<EnvFilter, tracing_subscriber::Registry> {
    let (filter, handle) = reload::Layer::new(
        EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    );
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    handle
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let handle = init_logging();
    let (pod, workload_name) = match (args.pod_name, args.workload_name) {
        (pod, name) if pod.is_empty() => (name.clone(), name),
        (pod, name) if name.is_empty() => (pod.clone(), pod),
        both => both,
    };
    let mut pod_labels = match &args.labels_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--labels-file {}", file.display()))?;
            weft_proxy::workload::parse_downward_labels(&text)
                .map_err(|e| anyhow::anyhow!("--labels-file {}: {e}", file.display()))?
        }
        None => Default::default(),
    };
    pod_labels.extend(parse_labels(&args.labels).map_err(anyhow::Error::msg)?);
    let mut labels: std::collections::HashMap<String, String> =
        pod_labels.clone().into_iter().collect();
    if (args.credential_file.is_some() || args.certs.is_some()) && !args.gateway {
        // As Istio's injector labels a pod with a sidecar: callers may take mTLS to it.
        labels
            .entry(weft_proxy::upstream::config::TLS_MODE_LABEL.into())
            .or_insert_with(|| "istio".into());
    }
    let hello = Hello {
        name: pod.clone(),
        workload_name: workload_name.clone(),
        namespace: args.namespace.clone(),
        address: args.address.clone().unwrap_or_default(),
        labels,
        service_account: args.service_account.clone(),
        held_version: String::new(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        stats_port: u32::from(args.stats.port()),
        join_token: match &args.join_token_file {
            Some(file) => Token::read(file)
                .context("--join-token-file")?
                .as_str()
                .to_string(),
            None => String::new(),
        },
    };
    let workload = Workload {
        name: workload_name,
        pod,
        namespace: args.namespace,
        labels: pod_labels,
        service_account: args.service_account,
        instance_ip: args.address.clone().unwrap_or_default(),
    };
    let set_log_level: weft_proxy::admin::SetLogLevel = Arc::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| format!("bad level {level:?}: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    let mut opts = ProxyOptions {
        outbound: args.outbound,
        inbound: args.inbound,
        admin: args.admin,
        health: args.health,
        stats: args.stats,
        envoy_stats: args.envoy_stats,
        workload,
        outbound_policy: args.outbound_traffic_policy,
        access_log: match args.access_log.as_str() {
            "off" => AccessLog::Off,
            "json" => AccessLog::Stdout(ISTIO_JSON.clone()),
            _ => AccessLog::Stdout(ISTIO_TEXT.clone()),
        },
        orig_dst: if args.no_capture {
            Arc::new(NoOriginalDst)
        } else {
            Arc::new(SoOriginalDst)
        },
        inbound_target: args.inbound_target,
        app_metrics: args.app_metrics,
        set_log_level: Some(set_log_level),
        regex_size_limit: args.max_regex_size,
        gateway: args.gateway.then_some(GatewayOptions {
            address: args.gateway_address,
        }),
        server_header: ServerHeader {
            disabled: args.no_server_header,
            value: args.server_header,
        },
        // Started with the runtime, below.
        certificates: None,
        workers: Default::default(),
    };
    if let Some(mark) = args.upstream_mark {
        weft_proxy::transport::connect::mark_upstream_connections(mark)?;
    }
    let drain_duration = args.drain_duration;
    // The main thread runs config, certificates, admin and telemetry export; connections
    // run on the workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .on_thread_park(crate::allocator::collect_when_idle)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    opts.workers = weft_proxy::workers::Workers::start(
        args.workers.max(1),
        crate::allocator::collect_when_idle,
    )
    .context("starting the workers")?;
    crate::allocator::return_freed_memory();
    let ca = match &args.credential_file {
        Some(file) => Some(ca_client(
            file,
            args.root_cert.as_deref(),
            args.ca_address.as_deref(),
            args.control_plane.as_deref().unwrap_or_default(),
            weft_security::Identity::new(
                &args.trust_domain,
                &hello.namespace,
                &hello.service_account,
            )
            .context("the proxy's identity (--namespace, --service-account, --trust-domain)")?,
            args.secret_ttl,
        )?),
        None => None,
    };
    let mut source = match (args.config, args.control_plane) {
        (Some(dir), _) => Source::Dir(dir),
        (None, Some(endpoint)) => {
            if hello.name.is_empty() {
                anyhow::bail!("a proxy that follows a control plane needs --pod-name or --workload-name, so proxy-status can tell proxies apart");
            }
            let scheme = if ca.is_some() { "https" } else { "http" };
            Source::ControlPlane(Box::new(StreamSource {
                endpoint: if endpoint.contains("://") {
                    endpoint
                } else {
                    format!("{scheme}://{endpoint}")
                },
                tls: None,
                hello,
                backoff: Default::default(),
            }))
        }
        (None, None) => {
            anyhow::bail!("say where config comes from: --control-plane ADDR or --config DIR")
        }
    };
    let result = runtime.block_on(async move {
        // Before the listeners: a SIGTERM that arrives while starting is not the default
        // action (exit at once) but a drain.
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        opts.certificates = match (ca, &args.certs) {
            (Some(ca), _) => Some(ca.start()),
            (None, Some(dir)) => Some(mounted_certificates(dir)?),
            (None, None) => None,
        };
        let certificates = opts.certificates.clone();
        let proxy = Proxy::start(opts).await?;
        if let Source::ControlPlane(stream) = &mut source {
            // Port 0 (tests): the port it got.
            stream.hello.stats_port = u32::from(proxy.stats_addr.port());
            if stream.endpoint.starts_with("https://") {
                stream.tls = certificates;
            }
        }
        tracing::info!(
            outbound = %proxy.outbound_addr, inbound = %proxy.inbound_addr,
            admin = %proxy.admin_addr, health = %proxy.health_addr,
            "weft proxy listening"
        );
        let store = proxy.config.clone();
        let mut watcher = tokio::spawn(async move {
            match source {
                Source::Dir(dir) => FileSource { dir: dir.clone() }
                    .run(store)
                    .await
                    .with_context(|| format!("cannot watch {}", dir.display())),
                Source::ControlPlane(stream) => {
                    stream.run(store).await;
                    Ok(())
                }
            }
        });
        let quit = proxy.quit.clone();
        // As pilot-agent: /quitquitquit exits at once (a Job's app is done, nothing to
        // drain for); SIGTERM and SIGINT drain first.
        let signal = tokio::select! {
            _ = quit.notified() => {
                tracing::info!("quitquitquit: exiting");
                return Ok(());
            }
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "interrupted",
            r = &mut watcher => return r?,
        };
        proxy.drain();
        tracing::info!(
            "{signal}: draining for {drain_duration:?}, then exiting (signal again to exit now)"
        );
        tokio::select! {
            _ = tokio::time::sleep(drain_duration) => {
                tracing::info!("drain period over: exiting, cutting what still runs");
            }
            _ = terminate.recv() => tracing::info!("SIGTERM again: exiting now"),
            _ = interrupt.recv() => tracing::info!("interrupted again: exiting now"),
            _ = quit.notified() => tracing::info!("quitquitquit: exiting now"),
        }
        Ok(())
    });
    // Tasks still running (splices, requests past the drain) are cut here, without waiting
    // for blocking work.
    runtime.shutdown_background();
    result
}

enum Source {
    Dir(PathBuf),
    ControlPlane(Box<StreamSource>),
}

/// Where the proxy's certificate comes from: the credential and root files, and the CA at
/// `ca_address` or the control plane's host on 15012.
/// Istio's file-mounted certificates in `dir`, for the identity their chain names.
fn mounted_certificates(dir: &Path) -> anyhow::Result<weft_proxy::identity::Certificates> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("--certs: {}", path.display()))
    };
    let (chain, key, root) = (
        read("cert-chain.pem")?,
        read("key.pem")?,
        read("root-cert.pem")?,
    );
    let leaf = weft_security::cert::chain_der(&chain)
        .ok()
        .and_then(|c| {
            c.first()
                .and_then(|d| weft_security::cert::CertInfo::of_der(d).ok())
        })
        .context("--certs: cert-chain.pem holds no certificate")?;
    let identity = leaf.identity().context(
        "--certs: cert-chain.pem's leaf names no SPIFFE ID (spiffe://TRUST_DOMAIN/ns/NS/sa/SA)",
    )?;
    weft_proxy::identity::Certificates::fixed(&chain, &key, &root, identity)
        .context("--certs: the certificate, its key or the root")
}

fn ca_client(
    credential_file: &Path,
    root_cert: Option<&Path>,
    ca_address: Option<&str>,
    control_plane: &str,
    identity: weft_security::Identity,
    ttl: Option<Duration>,
) -> anyhow::Result<CaClient> {
    let credential = std::fs::read_to_string(credential_file)
        .with_context(|| format!("--credential-file {}", credential_file.display()))?
        .trim()
        .to_string();
    let root = root_cert.context("--credential-file needs --root-cert")?;
    let root_pem =
        std::fs::read_to_string(root).with_context(|| format!("--root-cert {}", root.display()))?;
    weft_security::cert::chain_der(&root_pem)
        .with_context(|| format!("--root-cert {}", root.display()))?;
    let address = match ca_address {
        Some(a) => a.to_string(),
        None => {
            let authority = control_plane
                .split_once("://")
                .map_or(control_plane, |(_, rest)| rest);
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host);
            format!("{host}:15012")
        }
    };
    Ok(CaClient {
        endpoint: if address.contains("://") {
            address
        } else {
            format!("https://{address}")
        },
        root_pem,
        credential,
        credential_file: Some(credential_file.to_path_buf()),
        identity,
        ttl,
        backoff: Default::default(),
    })
}

#[derive(clap::Args)]
pub struct DrainArgs {
    /// The sidecar's admin port.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// How long to wait once the drain has started, for requests in flight to finish
    /// before the container's SIGTERM (Istio's terminationDrainDuration).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    wait: Duration,
}

/// `weft drain`, the injected sidecar's preStop hook: starts the drain through the admin
/// port (Envoy's `POST /drain_listeners?inboundonly&graceful`), then waits it out.
pub fn drain(args: DrainArgs) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&args.admin, Duration::from_secs(2))
        .with_context(|| format!("cannot reach the sidecar's admin port {}", args.admin))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(
        b"POST /drain_listeners?inboundonly&graceful HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(
        status == "200",
        "the sidecar did not start draining: {}",
        answer.lines().next().unwrap_or_default()
    );
    eprintln!("draining; waiting {:?} for requests in flight", args.wait);
    std::thread::sleep(args.wait);
    Ok(())
}

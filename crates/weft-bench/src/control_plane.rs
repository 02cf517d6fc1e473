//! `weft bench control-plane`: many simulated proxies against one `weft control`, measuring
//! the time to push every proxy its first snapshot, the time from an endpoint change to
//! every affected proxy acknowledging it, and what the control plane spends (CPU, peak RSS).

pub mod mesh_gen;
mod proxies;
mod tally;

use crate::procfs;
use mesh_gen::MeshSpec;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tally::{ChangeState, Tally};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weft_discovery::admin::admin_client::AdminClient;
use weft_discovery::admin::{ApplyRequest, VersionRequest};

/// How many unexpected updates and failures the markdown lists; the JSON has them all.
const LISTED: usize = 10;
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
    /// Ping the control plane every 10 s and drop the connection when a pong takes over
    /// 10 s, as `weft proxy` does; off, a control plane that stalls for longer is measured
    /// rather than abandoned.
    pub keepalive: bool,
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
            keepalive: true,
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

    /// The output files' name, without extension.
    pub fn stem(&self) -> &'static str {
        if self.mesh.sidecars {
            "control-plane"
        } else {
            "control-plane.no-sidecars"
        }
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
    #[error("the control plane exited ({0}) before answering; see {1}")]
    Exited(std::process::ExitStatus, PathBuf),
    #[error("the control plane did not answer within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    #[error("cannot reach the control plane's admin API at {0}: {1}")]
    Connect(SocketAddr, tonic::transport::Error),
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
    pub resources_min: usize,
    pub resources_max: usize,
    /// Proxies that hold other than what their namespace should see.
    pub wrong_resource_count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeSample {
    /// `namespace/name` of the WorkloadEntry whose address changed.
    pub workload_entry: String,
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
    /// Whether the simulated proxies pinged as `weft proxy` does.
    pub keepalive: bool,
    pub snapshot: Snapshot,
    pub changes: Changes,
    /// An istio-system Service every proxy sees, from Apply to the last acknowledgement.
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
    let config =
        mesh_gen::generate(&opts.mesh).map_err(|e| BenchError::Write(std::env::temp_dir(), e))?;
    let log = out.join(format!("{}.log", opts.stem()));
    let started = Instant::now();
    let mut control = ControlProcess::spawn(weft_bin, config.path(), &log)?;
    let grpc: SocketAddr = GRPC.parse().expect("a valid address");
    control.wait_ready(grpc, opts.timeout, &log).await?;
    let startup = started.elapsed();
    let mut results = measure(opts, grpc, Some(control.child.id())).await?;
    if let Some(cost) = &mut results.control_plane {
        cost.startup_seconds = Some(startup.as_secs_f64());
    }
    Ok(results)
}

/// Measures against a control plane already serving the mesh `opts.mesh` at `grpc`;
/// `pid` is its process, when it has its own, for CPU and RSS.
pub async fn measure(
    opts: &Options,
    grpc: SocketAddr,
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
                proxies::spawn(p, grpc, ns, opts.keepalive, tx.clone())
            })
            .collect(),
    );
    drop(tx);
    // Proxies whose stream failed are reported and left out; ones still waiting are not.
    if !tally.until(started + opts.timeout, Tally::synced).await && !tally.synced() {
        return Err(BenchError::Snapshot {
            waiting: (0..opts.proxies)
                .filter(|&p| tally.first[p].is_none() && tally.failed[p].is_none())
                .count(),
            proxies: opts.proxies,
            timeout: opts.timeout,
        });
    }
    let snapshot = tally.snapshot(opts, started);
    let snapshot_bytes = tally.bytes;
    let cpu_synced = cpu(pid)?;
    let mut admin = AdminClient::connect(format!("http://{grpc}"))
        .await
        .map_err(|e| BenchError::Connect(grpc, e))?;
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    for c in 0..opts.changes {
        // Namespaces take turns, so each change has as many proxies to reach.
        let ns = c % opts.mesh.namespaces;
        let s = ns + opts.mesh.namespaces * rng.usize(..opts.mesh.services_in(ns));
        let e = rng.usize(..opts.mesh.endpoints_per_service);
        let address = mesh_gen::changed_address(c);
        let documents = mesh_gen::workload_entry(&opts.mesh, s, e, &address);
        tally.by_address.insert(address, c);
        let started = Instant::now();
        tally.changes.push(ChangeState {
            namespace: mesh_gen::namespace(ns),
            name: mesh_gen::workload_entry_name(s, e),
            affected: opts.affected(ns),
            started,
            apply: Duration::ZERO,
            reached: HashMap::new(),
        });
        tally.during(apply(&mut admin, documents)).await?;
        tally.changes[c].apply = started.elapsed();
        tally
            .until(started + opts.change_timeout, |t| t.settled(c))
            .await;
    }
    let started = Instant::now();
    tally
        .during(apply(&mut admin, mesh_gen::mesh_wide_service(BARRIER)))
        .await?;
    let everyone = tally
        .until(started + opts.change_timeout, Tally::barrier_settled)
        .await
        && tally.failed.iter().all(Option::is_none);
    let mesh_wide_change_ms = everyone
        .then(|| tally.barrier.values().max().map(|at| ms(*at - started)))
        .flatten();
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
        keepalive: opts.keepalive,
        snapshot,
        changes: tally.changes(tally.bytes - snapshot_bytes),
        mesh_wide_change_ms,
        control_plane,
        unexpected: tally.unexpected,
        failures: tally.failed.into_iter().flatten().collect(),
    })
}

async fn apply(
    admin: &mut AdminClient<tonic::transport::Channel>,
    documents: String,
) -> Result<(), BenchError> {
    let request = ApplyRequest {
        source: "weft-bench".into(),
        documents,
    };
    admin.apply(request).await.map_err(BenchError::Apply)?;
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Each proxy needs a socket in this process and one in the control plane's, which
/// inherits this process's limit.
fn check_open_files(proxies: usize) -> Result<(), BenchError> {
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
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// `weft control` as a child process, killed when dropped.
struct ControlProcess {
    child: Child,
}

impl ControlProcess {
    fn spawn(weft_bin: &Path, config: &Path, log: &Path) -> Result<ControlProcess, BenchError> {
        let file = std::fs::File::create(log).map_err(|e| BenchError::Write(log.into(), e))?;
        let err = file
            .try_clone()
            .map_err(|e| BenchError::Write(log.into(), e))?;
        let mut cmd = Command::new(weft_bin);
        cmd.arg("control")
            .arg("--config-dir")
            .arg(config)
            .args(["--grpc", GRPC, "--monitoring", MONITORING])
            .args(["--endpoint-grace", "30"])
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

    /// Waits until the admin API answers, which it does once the config is read.
    async fn wait_ready(
        &mut self,
        grpc: SocketAddr,
        timeout: Duration,
        log: &Path,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = async {
                let mut admin = AdminClient::connect(format!("http://{grpc}")).await.ok()?;
                admin.version(VersionRequest {}).await.ok()
            };
            let per_attempt = Instant::now() + Duration::from_secs(1);
            if let Ok(Some(_)) = tokio::time::timeout_at(per_attempt, attempt).await {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Exited(status, log.into()));
            }
            if Instant::now() > deadline {
                return Err(BenchError::NotReady(timeout, log.into()));
            }
            tokio::time::sleep_until(per_attempt).await;
        }
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The results as a page of bench/results.
pub fn markdown(r: &Results) -> String {
    let m = &r.mesh;
    let mut md = format!(
        "# Control plane at scale\n\n{} simulated proxies{}; {} services × {} endpoints (WorkloadEntries) over {} namespaces: {} objects; {}.\n\n",
        r.proxies,
        if r.keepalive {
            ", pinging every 10 s as `weft proxy` does"
        } else {
            " that never ping (`--no-keepalive`)"
        },
        m.services,
        m.endpoints_per_service,
        m.namespaces,
        r.objects,
        if m.sidecars {
            "a Sidecar per namespace (egress `./*`, `istio-system/*`)"
        } else {
            "no Sidecars: every proxy sees everything"
        }
    );
    let (s, c) = (&r.snapshot, &r.changes);
    let p = |x: &Percentiles| format!("{:.1} / {:.1} / {:.1} ms", x.p50, x.p99, x.max);
    let range = |v: Vec<usize>| {
        let (min, max) = (v.iter().min(), v.iter().max());
        format!("{}–{}", min.unwrap_or(&0), max.unwrap_or(&0))
    };
    let affected = c.samples.iter().map(|s| s.affected).collect();
    let outside: usize = c.samples.iter().map(|s| s.outside).sum();
    let unexpected: usize = r.unexpected.iter().map(|u| u.proxies).sum();
    let rows = [
        (
            "full snapshot: all proxies connect at once → the last acknowledges its first update",
            format!("{:.2} s", s.seconds),
        ),
        (
            "per proxy, first update acknowledged p50 / p99 / max",
            p(&s.per_proxy_ms),
        ),
        ("proxies synced", format!("{} of {}", s.synced, r.proxies)),
        (
            "resources per proxy",
            range(vec![s.resources_min, s.resources_max]),
        ),
        (
            "proxies holding the wrong resource count",
            s.wrong_resource_count.to_string(),
        ),
        ("bytes of the first updates, all proxies", mib(s.bytes)),
        (
            "endpoint changes made, converged",
            format!("{}, {}", c.samples.len(), c.converged),
        ),
        (
            "endpoint change → every affected proxy acknowledged p50 / p99 / max",
            p(&c.convergence_ms),
        ),
        ("Apply RPC alone p50 / p99 / max", p(&c.apply_ms)),
        ("proxies affected per change", range(affected)),
        ("proxies that got a change not theirs", outside.to_string()),
        ("bytes of every later update, all proxies", mib(c.bytes)),
        (
            "mesh-wide change (istio-system Service) → all proxies acknowledged",
            r.mesh_wide_change_ms
                .map_or("did not converge".into(), |v| format!("{v:.1} ms")),
        ),
        (
            "resources sent that no change explains (× proxies)",
            unexpected.to_string(),
        ),
        ("proxy streams that ended", r.failures.len().to_string()),
    ];
    md.push_str("| measurement | value |\n| --- | ---: |\n");
    for (what, value) in rows {
        let _ = writeln!(md, "| {what} | {value} |");
    }
    if let Some(cp) = &r.control_plane {
        let _ = writeln!(
            md,
            "\nControl plane process: start-up (read and index the config) {}; CPU {:.1} s start-up + {:.1} s snapshot + {:.1} s changes; peak RSS {:.0} MiB before proxies connect, {:.0} MiB at the end.",
            cp.startup_seconds.map_or("–".into(), |s| format!("{s:.1} s")),
            cp.cpu_seconds_startup,
            cp.cpu_seconds_snapshot,
            cp.cpu_seconds_changes,
            cp.peak_rss_mib_before_proxies,
            cp.peak_rss_mib
        );
    }
    if !r.unexpected.is_empty() {
        let _ = writeln!(
            md,
            "\nSent though no change explains it ({} distinct, the first {LISTED}):\n",
            r.unexpected.len()
        );
        for u in r.unexpected.iter().take(LISTED) {
            let _ = writeln!(md, "- {} (to {} proxies)", u.what, u.proxies);
        }
    }
    if !r.failures.is_empty() {
        let _ = writeln!(md, "\nStreams that ended (the first {LISTED}):\n");
        for f in r.failures.iter().take(LISTED) {
            let _ = writeln!(md, "- {f}");
        }
    }
    md
}

/// Writes `<stem>.json` and `<stem>.md` into `out`; returns the markdown.
pub fn write(r: &Results, opts: &Options, out: &Path) -> Result<String, BenchError> {
    let md = markdown(r);
    let json = serde_json::to_vec_pretty(r).expect("results serialize");
    for (ext, bytes) in [("json", json.as_slice()), ("md", md.as_bytes())] {
        let file = out.join(format!("{}.{ext}", opts.stem()));
        std::fs::write(&file, bytes).map_err(|e| BenchError::Write(file.clone(), e))?;
    }
    Ok(md)
}

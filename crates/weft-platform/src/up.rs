//! `weft up`, `weft down`, `weft status`, `weft logs`: the host side. `weft up` checks the
//! mesh file, starts the sandbox in new namespaces (a user namespace too when not root),
//! forwards the host's 127.0.0.1 ports for the control plane and gateways into it, and
//! stays in the foreground until Ctrl-C or `weft down`.

use crate::addons::{Prometheus, PROMETHEUS_SOCKET};
use crate::forward::tcp_to_unix;
use crate::sandbox::{gateway_socket, CONTROL_SOCKET, DASHBOARD_SOCKET, ZIPKIN_SOCKET};
use crate::state::{StateDir, Status};
use crate::stop::{StopSignals, DOWN_GRACE, PROXY_DRAIN, UP_GRACE};
use crate::{mesh, plan, PlatformError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::process::Command;
use weft_control::ControlOptions;
use weft_discovery::credentials::{self, AdminCredential};

pub struct UpOptions {
    pub mesh_file: PathBuf,
    pub state: StateDir,
    pub weft: PathBuf,
    /// Where `weft apply` and friends reach the control plane.
    pub control_plane: SocketAddr,
    /// How long to wait for every pod to be ready before saying which are not.
    pub ready_within: Duration,
    /// Start from the mesh file's config alone, forgetting what earlier runs applied.
    pub fresh: bool,
    /// The Prometheus addon and the host address of its API and UI.
    pub prometheus: Option<(Prometheus, SocketAddr)>,
    /// The host address of the control plane's trace collector (Zipkin's API).
    pub zipkin: SocketAddr,
    /// The host address of the dashboard (Kiali's 20001).
    pub dashboard: SocketAddr,
    /// How often the dashboard's aggregator (and the Prometheus addon) scrape.
    pub scrape_interval: Duration,
}

/// Root gets plain namespaces; anyone else a user namespace in which they are root.
fn namespaces(root: bool) -> Vec<&'static str> {
    // --mount-proc: the sandbox reads /proc/<pid> of its pods, in its own PID namespace.
    let mut args = vec![
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
    ];
    if !root {
        args.splice(0..0, ["--user", "--map-root-user"]);
    }
    args
}

/// Says exactly why namespaces cannot be made here, before anything is started.
fn preflight(root: bool) -> Result<(), PlatformError> {
    crate::sys::check_tools()?;
    let mut args = namespaces(root);
    args.retain(|a| *a != "--kill-child");
    let out = std::process::Command::new("unshare")
        .args(&args)
        .arg("true")
        .output()
        .map_err(|source| PlatformError::Io {
            what: "running unshare (install util-linux)",
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(PlatformError::NoNamespaces {
        why,
        fix: if root {
            "the kernel or the container refuses new namespaces to root: run weft up on the host, or in a container started with --privileged (or CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        } else {
            "unprivileged user namespaces are off: run weft up as root, or allow them with `sysctl -w kernel.unprivileged_userns_clone=1` (Debian/Ubuntu) or `sysctl -w user.max_user_namespaces=15000`, or on Ubuntu 24.04+ `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`"
        },
    })
}

pub async fn up(opts: UpOptions) -> Result<(), PlatformError> {
    let mut stop = StopSignals::install().map_err(|source| PlatformError::Io {
        what: "listening for SIGTERM",
        source,
    })?;
    let mesh = mesh::load(&opts.mesh_file)?;
    let plan = plan::plan(&mesh)?;
    reclaim(&opts.state)?;
    let root = nix::unistd::getuid().is_root();
    preflight(root)?;
    for dir in [opts.state.config(), opts.state.logs(), opts.state.pods()] {
        std::fs::create_dir_all(&dir).map_err(|source| PlatformError::Io {
            what: "creating the state directory",
            source,
        })?;
    }
    let mut forwards = vec![
        (opts.control_plane, CONTROL_SOCKET.to_string()),
        (opts.zipkin, ZIPKIN_SOCKET.to_string()),
        (opts.dashboard, DASHBOARD_SOCKET.to_string()),
    ];
    if let Some((_, addr)) = &opts.prometheus {
        forwards.push((*addr, PROMETHEUS_SOCKET.to_string()));
    }
    for w in &mesh.workloads {
        for port in w.spec.gateway.iter().flat_map(|g| &g.host_ports) {
            forwards.push((([127, 0, 0, 1], *port).into(), gateway_socket(*port)));
        }
    }
    let mut listeners = Vec::new();
    for (addr, socket) in forwards {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| PlatformError::Bind { addr, source })?;
        listeners.push(tokio::spawn(tcp_to_unix(
            listener,
            opts.state.root.join(socket),
        )));
    }
    if opts.fresh {
        forget_applied_config(&opts.state)?;
    }
    let admin = publish_admin_credential(&opts);
    let log = std::fs::File::create(opts.state.logs().join("sandbox.log")).map_err(|source| {
        PlatformError::Io {
            what: "creating the sandbox log",
            source,
        }
    })?;
    let mode = if root { "root" } else { "rootless" };
    // setpriv's parent-death signal reaches unshare, whose --kill-child takes the sandbox
    // down with it: a `weft up` that is killed outright leaves nothing running.
    let mut sandbox = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", "unshare"])
        .args(namespaces(root))
        .arg("--")
        .arg(&opts.weft)
        .args(["platform", "sandbox", "--state-dir"])
        .arg(&opts.state.root)
        .arg("--mesh")
        .arg(&opts.mesh_file)
        .args(
            opts.prometheus
                .iter()
                .flat_map(|(p, _)| ["--prometheus".into(), p.binary.clone().into_os_string()]),
        )
        .arg("--scrape-interval")
        .arg(opts.scrape_interval.as_secs().max(1).to_string())
        .env("WEFT_PLATFORM_MODE", mode)
        .stdout(log.try_clone().map_err(|source| PlatformError::Io {
            what: "opening a log",
            source,
        })?)
        .stderr(log)
        // Ctrl-C reaches `weft up` alone, which stops the sandbox in order.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PlatformError::Io {
            what: "starting the sandbox with unshare",
            source,
        })?;
    let pid = std::process::id().to_string();
    let sandbox_pid = sandbox.id().map(|p| p.to_string()).unwrap_or_default();
    let pids = format!("{pid}\n{sandbox_pid}\n");
    crate::state::write_atomic(&opts.state.pid_file(), pids.as_bytes()).map_err(|source| {
        PlatformError::Io {
            what: "writing the pid file",
            source,
        }
    })?;
    let pods = plan.pods.len();
    // Ctrl-C while starting stops as well.
    let exited = tokio::select! {
        ready = wait_until_ready(&opts.state, pods, opts.ready_within, &mut sandbox) => {
            print_summary(&opts, ready.as_ref());
            tokio::select! {
                _ = stop.recv() => None,
                status = sandbox.wait() => Some(status),
            }
        }
        _ = stop.recv() => None,
    };
    if exited.is_none() {
        eprintln!("stopping: sidecars drain for {PROXY_DRAIN:?}");
        stop_sandbox(&mut sandbox).await;
    }
    let _ = sandbox.kill().await;
    if let Some(admin) = admin {
        credentials::unpublish_admin(opts.control_plane, &admin);
    }
    let _ = std::fs::remove_file(opts.state.pid_file());
    let _ = std::fs::remove_file(opts.state.status_file());
    match exited {
        Some(status) => Err(PlatformError::SandboxExited {
            status: format!("{status:?}"),
            log: opts.state.logs().join("sandbox.log"),
        }),
        None => {
            eprintln!("mesh down: every pod, link and rule went with its namespaces");
            Ok(())
        }
    }
}

/// SIGTERM to the sandbox (which stops its pods), then SIGKILL if it outlives its grace
/// period. The sandbox is `unshare`'s child: `unshare --fork` blocks SIGTERM itself.
async fn stop_sandbox(sandbox: &mut tokio::process::Child) {
    let inner = sandbox.id().and_then(|unshare| {
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse::<i32>()
            .ok()
    });
    if let Some(pid) = inner {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
    }
    if tokio::time::timeout(UP_GRACE, sandbox.wait())
        .await
        .is_err()
    {
        eprintln!("the sandbox did not stop within {UP_GRACE:?}: killing it");
    }
}

/// A `weft up` that crashed leaves a pid file and maybe a sandbox: stop them, or refuse if
/// that `weft up` is alive.
fn reclaim(state: &StateDir) -> Result<(), PlatformError> {
    let Ok(text) = std::fs::read_to_string(state.pid_file()) else {
        return Ok(());
    };
    let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    if let Some(&up) = pids.first() {
        if alive(up) {
            return Err(PlatformError::AlreadyUp {
                pid: up,
                state: state.root.clone(),
            });
        }
    }
    for &pid in pids.iter().skip(1) {
        if alive(pid) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(state.pid_file());
    let _ = std::fs::remove_file(state.status_file());
    Ok(())
}

/// Running, not merely unreaped (a zombie's stat says `Z`).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

async fn wait_until_ready(
    state: &StateDir,
    pods: usize,
    within: Duration,
    sandbox: &mut tokio::process::Child,
) -> Option<Status> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = sandbox.try_wait() {
            return last;
        }
        if let Ok(status) = state.read_status() {
            let done = status.pods.len() == pods && status.pods.iter().all(|p| p.ready);
            last = Some(status);
            if done {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// Removes what earlier runs applied (the config files and the announced workloads),
/// keeping the credentials CLIs and pods already hold.
fn forget_applied_config(state: &StateDir) -> Result<(), PlatformError> {
    let io = |source| PlatformError::Io {
        what: "clearing the applied config (--fresh)",
        source,
    };
    let config = state.config();
    for entry in std::fs::read_dir(&config).map_err(io)?.flatten() {
        if weft_api::load::is_config_file(&entry.path()) {
            std::fs::remove_file(entry.path()).map_err(io)?;
        }
    }
    let announced = ControlOptions::new(config).state_file;
    if let Some(file) = announced.filter(|f| f.exists()) {
        std::fs::remove_file(file).map_err(io)?;
    }
    Ok(())
}

/// Makes the sandbox's control plane's admin credential (or takes the one a previous run
/// made) and publishes it for this user's CLIs at the host address before the mesh starts,
/// so `weft apply` works from the moment the control plane answers.
fn publish_admin_credential(opts: &UpOptions) -> Option<AdminCredential> {
    let control = ControlOptions::new(opts.state.config());
    let published = control
        .admin_credential()
        .map_err(|e| e.to_string())
        .and_then(|credential| {
            let path = credentials::publish_admin(opts.control_plane, &credential)
                .map_err(|e| e.to_string())?;
            Ok((credential, path))
        });
    match published {
        Ok((credential, path)) => {
            tracing::debug!(published = %path.display(), "admin credential published");
            Some(credential)
        }
        Err(e) => {
            eprintln!(
                "the CLI will need --admin-cert {}: {e}",
                control.admin_credential_file.display()
            );
            None
        }
    }
}

fn print_summary(opts: &UpOptions, status: Option<&Status>) {
    let Some(status) = status else {
        eprintln!(
            "the mesh did not start; see {}",
            opts.state.logs().join("sandbox.log").display()
        );
        return;
    };
    let ready = status.pods.iter().filter(|p| p.ready).count();
    eprintln!(
        "mesh up ({} mode): {ready}/{} pods ready; control plane at {} (weft proxy-status, weft apply -f …)",
        status.mode,
        status.pods.len(),
        opts.control_plane
    );
    if let Some((_, addr)) = &opts.prometheus {
        eprintln!(
            "prometheus at http://{addr} (weft dashboard prometheus), scraping every sidecar, gateway and the control plane"
        );
    }
    eprintln!(
        "traces at http://{} (Zipkin's API: /api/v2/traces?serviceName=productpage.default), from the control plane's collector",
        opts.zipkin
    );
    eprintln!(
        "dashboard at http://{} (weft dashboard): the mesh's graph, charts, traces and config",
        opts.dashboard
    );
    if !status.restored.is_empty() {
        eprintln!(
            "restored from an earlier run ({}), still applied: {}; --fresh starts from the mesh file's config alone",
            opts.state.config().display(),
            status.restored.join(", ")
        );
    }
    for p in status.pods.iter().filter(|p| !p.ready) {
        eprintln!(
            "  not ready yet: {}/{} — weft logs {} -n {} [--proxy]",
            p.namespace, p.name, p.workload, p.namespace
        );
    }
    eprintln!("weft status lists pods; Ctrl-C or weft down stops everything");
}

/// Stops the mesh that `weft up` runs for this state directory.
pub async fn down(state: &StateDir) -> Result<(), PlatformError> {
    let text = std::fs::read_to_string(state.pid_file()).map_err(|_| PlatformError::NotUp {
        state: state.root.clone(),
    })?;
    let Some(up) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return Err(PlatformError::NotUp {
            state: state.root.clone(),
        });
    };
    if !alive(up) {
        return reclaim(state);
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(up), nix::sys::signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + DOWN_GRACE;
    while tokio::time::Instant::now() < deadline {
        if !alive(up) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(PlatformError::StillRunning {
        pid: up,
        within: DOWN_GRACE,
    })
}

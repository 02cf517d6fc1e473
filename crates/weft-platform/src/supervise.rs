//! Keeps a process running, as a kubelet keeps a container: restarts it with exponential
//! backoff (capped, reset after a long enough run), appends its output to a log file, and
//! stops it as a kubelet does: SIGTERM, a grace period, then SIGKILL.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A run this long counts as healthy: the next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct Supervised {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// A process kept running until [`Supervisor::terminate`]; dropping the runtime kills it.
pub struct Supervisor {
    name: String,
    /// How many SIGTERMs have been asked for; the first one also ends the restarts.
    terms: watch::Sender<u32>,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Starts `p` and restarts it whenever it exits, counting restarts.
    pub fn start(p: Supervised, restarts: Arc<AtomicU32>) -> Supervisor {
        let (terms, rx) = watch::channel(0);
        Supervisor {
            name: p.name.clone(),
            terms,
            task: tokio::spawn(supervise(p, restarts, rx)),
        }
    }

    /// Sends the process SIGTERM (once per call); it is not restarted from now on.
    pub fn terminate(&self) {
        self.terms.send_modify(|n| *n += 1);
    }

    /// Whether the process has exited for good (stopped, or its supervisor ended).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until `deadline` for the process to exit after [`Supervisor::terminate`], then
    /// kills it.
    pub async fn stopped(mut self, deadline: tokio::time::Instant) {
        if tokio::time::timeout_at(deadline, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(process = %self.name, "still running at the end of its grace period: killing it");
            // Dropping the task drops the child, which is killed on drop.
            self.task.abort();
            let _ = self.task.await;
        }
    }
}

async fn supervise(p: Supervised, restarts: Arc<AtomicU32>, mut terms: watch::Receiver<u32>) {
    let mut backoff = Duration::from_millis(100);
    let mut sent = 0;
    loop {
        let started = tokio::time::Instant::now();
        match spawn(&p) {
            Ok(mut child) => loop {
                tokio::select! {
                    status = child.wait() => {
                        if *terms.borrow() > 0 {
                            tracing::info!(process = %p.name, ?status, "stopped");
                            return;
                        }
                        tracing::warn!(process = %p.name, ?status, "exited; restarting");
                        break;
                    }
                    changed = terms.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let asked = *terms.borrow_and_update();
                        if let Some(pid) = child.id() {
                            for _ in sent..asked {
                                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                            }
                        }
                        sent = asked;
                    }
                }
            },
            Err(e) => {
                tracing::error!(process = %p.name, "cannot start {}: {e}", p.program.display())
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = terms.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        restarts.fetch_add(1, Ordering::Relaxed);
    }
}

fn spawn(p: &Supervised) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)?;
    Command::new(&p.program)
        .args(&p.args)
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Signals come from the pod's init, in the order a kubelet sends them, not from
        // the terminal's Ctrl-C to the whole process group.
        .process_group(0)
        // The pod's init dies with its pod; its children must not outlive it.
        .kill_on_drop(true)
        .spawn()
}

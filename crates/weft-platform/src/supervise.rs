//! Keeps a process running, as a kubelet keeps a container: restarts it with exponential
//! backoff (capped, reset after a long enough run) and appends its output to a log file.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

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

/// Runs `p` until the task is dropped, counting restarts.
pub async fn supervise(p: Supervised, restarts: Arc<AtomicU32>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        match spawn(&p) {
            Ok(mut child) => {
                let status = child.wait().await;
                tracing::warn!(process = %p.name, ?status, "exited; restarting");
            }
            Err(e) => {
                tracing::error!(process = %p.name, "cannot start {}: {e}", p.program.display())
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
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
        // The pod's init dies with its pod; its children must not outlive it.
        .kill_on_drop(true)
        .spawn()
}

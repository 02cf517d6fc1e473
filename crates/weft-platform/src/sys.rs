//! The system tools the platform drives, as istio-init drives iptables: `ip`, `iptables`,
//! `mount`, `unshare`. Their failures come back with the command and what to install or
//! change.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("cannot run `{program}`: {source}; install {package}")]
    Missing {
        program: String,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

fn package(program: &str) -> &'static str {
    match program {
        "ip" => "iproute2",
        "iptables" => "iptables",
        _ => "util-linux",
    }
}

/// Runs a command to completion; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String, SysError> {
    let out = Command::new(program)
        .args(args)
        .env("XTABLES_LOCKFILE", xtables_lock())
        .output()
        .map_err(|source| SysError::Missing {
            program: program.into(),
            package: package(program),
            source,
        })?;
    if !out.status.success() {
        return Err(SysError::Failed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// iptables locks /run/xtables.lock, which a rootless user may not create; every pod has its
/// own network namespace, so a private lock file is as good.
fn xtables_lock() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("weft-xtables-{}.lock", std::process::id()))
}

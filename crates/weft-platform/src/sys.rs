//! The system tools the platform drives, as istio-init drives iptables: `ip`, `iptables`,
//! `mount`, `unshare`. Their failures come back with the command and what to install or
//! change.

use std::path::PathBuf;
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

/// Where a tool is: on PATH, or in the sbin directories a non-root user's PATH often lacks.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Each tool the platform needs, or what to install.
pub fn check_tools() -> Result<(), SysError> {
    for program in ["ip", "iptables", "unshare", "setpriv", "mount"] {
        if find(program).is_none() {
            return Err(SysError::Missing {
                program: program.into(),
                package: package(program),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
    }
    Ok(())
}

/// Runs a command to completion; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String, SysError> {
    let out = Command::new(find(program).unwrap_or_else(|| program.into()))
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

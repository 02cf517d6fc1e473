//! What a process has cost, read from /proc: CPU seconds (user + system) and peak RSS.

use std::path::PathBuf;

/// Linux reports CPU times in clock ticks of 1/100 s (`USER_HZ`) on every architecture
/// Weft runs on.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, thiserror::Error)]
#[error("cannot read /proc/{pid}: {source} (has the process exited?)")]
pub struct ProcError {
    pid: u32,
    #[source]
    source: std::io::Error,
}

fn read(pid: u32, file: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/{file}")))
        .map_err(|source| ProcError { pid, source })
}

/// User plus system CPU seconds so far.
pub fn cpu_seconds(pid: u32) -> Result<f64, ProcError> {
    let stat = read(pid, "stat")?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((tick(11) + tick(12)) / TICKS_PER_SECOND)
}

/// Peak resident set size in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> Result<f64, ProcError> {
    status_mib(pid, "VmHWM:")
}

/// Resident set size now, in MiB (`VmRSS`).
pub fn rss_mib(pid: u32) -> Result<f64, ProcError> {
    status_mib(pid, "VmRSS:")
}

fn status_mib(pid: u32, field: &str) -> Result<f64, ProcError> {
    let status = read(pid, "status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let burn: u64 = (0..5_000_000u64).map(|i| i % 7).sum();
        assert!(burn > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(peak_rss_mib(pid).unwrap() > 1.0);
        assert!(rss_mib(pid).unwrap() > 1.0);
        assert!(cpu_seconds(u32::MAX).is_err());
    }
}

//! What a process has cost, read from /proc: CPU seconds (user + system), peak RSS, and
//! resident memory split into anonymous and file-backed pages.

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

/// Resident memory by kind, MiB: anonymous pages (heaps, stacks) and file-backed ones (the
/// binary's code and data, which every process mapping the same file shares).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Resident {
    pub anon_mib: f64,
    pub file_mib: f64,
}

impl Resident {
    /// Keeps the larger of each kind.
    pub fn raise(&mut self, other: Resident) {
        self.anon_mib = self.anon_mib.max(other.anon_mib);
        self.file_mib = self.file_mib.max(other.file_mib);
    }
}

/// Resident memory now (`RssAnon`, `RssFile`).
pub fn resident(pid: u32) -> Result<Resident, ProcError> {
    let status = read(pid, "status")?;
    Ok(Resident {
        anon_mib: field_mib(&status, "RssAnon:"),
        file_mib: field_mib(&status, "RssFile:"),
    })
}

fn status_mib(pid: u32, field: &str) -> Result<f64, ProcError> {
    Ok(field_mib(&read(pid, "status")?, field))
}

fn field_mib(status: &str, field: &str) -> f64 {
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
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
        let r = resident(pid).unwrap();
        assert!(r.anon_mib > 0.0 && r.file_mib > 0.0, "{r:?}");
        assert!(cpu_seconds(u32::MAX).is_err());
    }
}

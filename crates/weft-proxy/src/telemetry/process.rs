//! The proxy process's own metrics under the Prometheus client libraries' standard names
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …), as Istio's agent adds
//! its own to the merged 15020 output. Read from `/proc/self` at scrape time.

use std::fmt::Write;

pub fn render(out: &mut String) {
    let Some(stat) = read_stat() else { return };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as f64;
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
    });
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        (stat.utime + stat.stime) as f64 / ticks,
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stat.rss_pages as f64 * page,
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.vsize as f64,
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        fds as f64,
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max_fds as f64,
    );
    if let Some(boot) = boot {
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + stat.starttime as f64 / ticks,
        );
    }
}

struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// `/proc/self/stat`: fields after the command name, which may hold spaces and `)`.
fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime 15, starttime 22, vsize 23,
    // rss 24.
    let at = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: at(14)?,
        stime: at(15)?,
        starttime: at(22)?,
        vsize: at(23)?,
        rss_pages: at(24)?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let mut out = String::new();
        super::render(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {out}"))
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_open_fds") >= 3.0);
        let started = value("process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(started <= now + 1.0 && started > now - 3600.0, "{started}");
    }
}

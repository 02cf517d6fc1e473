//! The results of `weft bench control-plane` as a page of bench/results and as JSON.

use super::{BenchError, Options, Percentiles, Results};
use std::fmt::Write;
use std::path::Path;

/// How many unexpected updates and failures the markdown lists; the JSON has them all.
const LISTED: usize = 10;

/// The results as a page of bench/results.
pub fn markdown(r: &Results) -> String {
    let m = &r.mesh;
    let mut md = format!(
        "# Control plane at scale\n\n{} simulated proxies{}; {} services × {} endpoints ({}) over {} namespaces: {} objects; {}.\n\n",
        r.proxies,
        if r.patient {
            " that wait however long the control plane takes (`--patient`)"
        } else {
            " that give up on a connection as `weft proxy` does (set-up over 5 s, a ping unanswered for 10 s)"
        },
        m.services,
        m.endpoints_per_service,
        if r.kubernetes {
            "Pods listed by an EndpointSlice per Service, watched by `weft control --kubernetes` in a fake API server; each change an EndpointSlice update"
        } else {
            "WorkloadEntries"
        },
        m.namespaces,
        r.objects,
        if m.sidecars {
            "a Sidecar per namespace (egress `./*`, `istio-system/*`)"
        } else {
            "no Sidecars: every proxy sees everything"
        }
    );
    let (s, c) = (&r.snapshot, &r.changes);
    let p = |x: &Percentiles, n: usize| match n {
        0 => "–".to_string(),
        _ => format!("{:.1} / {:.1} / {:.1} ms", x.p50, x.p99, x.max),
    };
    let range = |v: Vec<usize>| {
        let (min, max) = (v.iter().min(), v.iter().max());
        format!("{}–{}", min.unwrap_or(&0), max.unwrap_or(&0))
    };
    let affected = c.samples.iter().map(|s| s.affected).collect();
    let outside: usize = c.samples.iter().map(|s| s.outside).sum();
    let unexpected: usize = r.unexpected.iter().map(|u| u.proxies).sum();
    // The goals of bench/README.md ("Control plane at scale"), beside the rows they judge.
    let snapshot_goal = match r.proxies {
        1000 => "< 2 s",
        _ => "",
    };
    let mut rows =
        vec![
        (
            "full snapshot: all proxies connect at once → the last acknowledges its first update",
            format!("{:.2} s", s.seconds),
            snapshot_goal,
        ),
        (
            "per proxy, first update acknowledged p50 / p99 / max",
            p(&s.per_proxy_ms, s.synced),
            "",
        ),
        ("proxies synced", format!("{} of {}", s.synced, r.proxies), "all"),
        (
            "connections retried before the first update",
            s.retries.to_string(),
            "0 (no reconnect storm)",
        ),
        (
            "resources per proxy",
            range(vec![s.resources_min, s.resources_max]),
            "",
        ),
        (
            "proxies holding the wrong resource count",
            s.wrong_resource_count.to_string(),
            "0",
        ),
        ("bytes of the first updates, all proxies", mib(s.bytes), ""),
        (
            "endpoint changes made, converged",
            format!("{}, {}", c.samples.len(), c.converged),
            "all",
        ),
        (
            "endpoint change → every affected proxy acknowledged p50 / p99 / max",
            p(&c.convergence_ms, c.converged),
            "p99 < 1,000 ms",
        ),
        (
            if r.kubernetes {
                "EndpointSlice write alone p50 / p99 / max"
            } else {
                "Apply RPC alone p50 / p99 / max"
            },
            p(&c.apply_ms, c.samples.len()),
            "",
        ),
        ("proxies affected per change", range(affected), ""),
        ("proxies that got a change not theirs", outside.to_string(), "0"),
        ("bytes of every later update, all proxies", mib(c.bytes), ""),
        (
            "mesh-wide change (istio-system Service) → all proxies acknowledged",
            r.mesh_wide_change_ms
                .map_or("did not converge".into(), |v| format!("{v:.1} ms")),
            "",
        ),
        (
            "resources sent that no change explains (× proxies)",
            unexpected.to_string(),
            "0",
        ),
        ("proxy streams that ended", r.failures.len().to_string(), "0"),
    ];
    if let Some(cp) = &r.control_plane {
        let per_proxy_kib =
            (cp.peak_rss_mib - cp.peak_rss_mib_before_proxies) * 1024.0 / r.proxies.max(1) as f64;
        let snapshot_kib = s.bytes as f64 / 1024.0 / s.synced.max(1) as f64;
        rows.extend([
            (
                "control plane peak RSS",
                format!("{:.0} MiB", cp.peak_rss_mib),
                "< 2 GiB",
            ),
            (
                "its growth once proxies connect, per proxy / one proxy's first update",
                format!("{per_proxy_kib:.0} KiB / {snapshot_kib:.0} KiB"),
                "grows with views, not proxies",
            ),
        ]);
    }
    md.push_str("Until their first update, proxies reconnect with `weft proxy`'s backoff.\n\n| measurement | value | goal |\n| --- | ---: | --- |\n");
    for (what, value, goal) in rows {
        let _ = writeln!(md, "| {what} | {value} | {goal} |");
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

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

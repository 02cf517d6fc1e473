//! Writing results: `results.json` (everything), `results.md` (tables, ratios, goals) and
//! `latency.svg` (latency by percentile, one panel per workload).

use crate::compare::{workloads, Measurement, Results, IDLE_CONNECTIONS};
use std::fmt::Write;
use std::path::Path;

fn find<'a>(r: &'a Results, workload: &str, variant: &str) -> Option<&'a Measurement> {
    r.measurements
        .iter()
        .find(|m| m.workload == workload && m.variant == variant)
}

fn cpu_per_1000(m: &Measurement) -> f64 {
    m.proxies.iter().map(|p| p.cpu_ms_per_1000_requests).sum()
}

/// Each proxy process's CPU per 1,000 requests, and the pair's.
fn cpu_cell(m: &Measurement) -> String {
    if m.proxies.is_empty() {
        return "–".into();
    }
    let each: Vec<String> = m
        .proxies
        .iter()
        .map(|p| format!("{:.1}", p.cpu_ms_per_1000_requests))
        .collect();
    format!("{} = {:.1}", each.join(" + "), cpu_per_1000(m))
}

/// Every variant, in table order.
const VARIANTS: [&str; 5] = ["direct", "weft", "envoy", "weft-mtls", "envoy-mtls"];

/// The peak RSS of a variant's proxies (`weft` → `weft-client`, `weft-server`), the larger.
fn rss(r: &Results, variant: &str) -> f64 {
    r.peak_rss_mib
        .iter()
        .filter(|(n, _)| {
            n.strip_prefix(variant)
                .is_some_and(|side| matches!(side, "-client" | "-server"))
        })
        .map(|(_, m)| *m)
        .fold(0.0, f64::max)
}

fn ratio(weft: f64, envoy: f64) -> String {
    if envoy > 0.0 {
        format!("{:.2}×", weft / envoy)
    } else {
        "–".into()
    }
}

pub fn markdown(r: &Results, rate: u32) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Weft, Envoy and a direct connection, side by side\n");
    let _ = writeln!(
        md,
        "Each proxy variant is two hops (client-side and server-side proxy) except in the one-hop workload (the server side alone), {} worker threads per proxy, {:.0} s per measurement after a 1 s warm-up; variants interleaved per workload. Latency in µs from the intended send time (open loop) or the send time (closed loop); CPU from /proc, both proxies of a pair summed.\n",
        r.workers, r.duration_seconds
    );
    for w in workloads(rate) {
        let _ = writeln!(
            md,
            "## {} ({} connections, {:?})\n",
            w.name, w.connections, w.mode
        );
        let _ = writeln!(md, "| variant | req/s | p50 | p90 | p99 | p99.9 | added p50 | added p90 | added p99 | added p99.9 | CPU ms / 1,000 req (client + server = pair) | errors |");
        let _ = writeln!(
            md,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let direct = find(r, w.name, "direct");
        for variant in VARIANTS {
            let Some(m) = find(r, w.name, variant) else {
                continue;
            };
            let o = &m.outcome;
            let added = |v: u64, d: fn(&crate::load::Outcome) -> u64| {
                direct.map_or("–".into(), |dm| {
                    format!("{}", v as i64 - d(&dm.outcome) as i64)
                })
            };
            let _ = writeln!(
                md,
                "| {variant} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                o.throughput,
                o.p50_us,
                o.p90_us,
                o.p99_us,
                o.p999_us,
                added(o.p50_us, |o| o.p50_us),
                added(o.p90_us, |o| o.p90_us),
                added(o.p99_us, |o| o.p99_us),
                added(o.p999_us, |o| o.p999_us),
                cpu_cell(m),
                o.errors
            );
        }
        md.push('\n');
        for (label, weft, envoy) in [
            ("Weft/Envoy", "weft", "envoy"),
            ("With mTLS, Weft/Envoy", "weft-mtls", "envoy-mtls"),
        ] {
            if let (Some(d), Some(weft), Some(envoy)) =
                (direct, find(r, w.name, weft), find(r, w.name, envoy))
            {
                let add =
                    |m: &Measurement| (m.outcome.p99_us as f64 - d.outcome.p99_us as f64).max(1.0);
                let _ = writeln!(
                    md,
                    "{label}: added p99 {}, CPU per request {}, throughput {}.\n",
                    ratio(add(weft), add(envoy)),
                    ratio(cpu_per_1000(weft), cpu_per_1000(envoy)),
                    ratio(weft.outcome.throughput, envoy.outcome.throughput)
                );
            }
        }
    }
    md.push_str(&tls_cost(r, rate));
    let _ = writeln!(
        md,
        "## Peak RSS\n\nPeak RSS (`VmHWM`) over the run; beside it, the largest anonymous and file-backed resident sizes sampled every 100 ms under the measured loads. File-backed pages are the binary's code and data, held once in the page cache however many sidecars on a node run the same binary.\n\n| process | peak RSS MiB | anonymous MiB | file-backed MiB |\n| --- | ---: | ---: | ---: |"
    );
    for (name, mib) in &r.peak_rss_mib {
        let (anon, file) = r
            .resident_peaks
            .iter()
            .find(|(n, _)| n == name)
            .map_or(("–".into(), "–".into()), |(_, m)| {
                (format!("{:.1}", m.anon_mib), format!("{:.1}", m.file_mib))
            });
        let _ = writeln!(md, "| {name} | {mib:.1} | {anon} | {file} |");
    }
    md.push('\n');
    md.push_str(&goals(r, rate));
    md
}

/// What mTLS between the hops adds to each proxy's pair: CPU per 1,000 requests, added
/// p99 and peak RSS, mTLS run minus plaintext run.
fn tls_cost(r: &Results, rate: u32) -> String {
    let mut md = String::from("## What mTLS costs\n\n| workload | proxy | CPU ms / 1,000 req, pair | added p99 µs | throughput |\n| --- | --- | ---: | ---: | ---: |\n");
    let mut any = false;
    for w in workloads(rate) {
        for proxy in ["weft", "envoy"] {
            let mtls = format!("{proxy}-mtls");
            let (Some(plain), Some(secure)) = (find(r, w.name, proxy), find(r, w.name, &mtls))
            else {
                continue;
            };
            any = true;
            let _ = writeln!(
                md,
                "| {} | {proxy} | {:+.1} ({:.1} → {:.1}) | {:+} | {:.0} → {:.0} |",
                w.name,
                cpu_per_1000(secure) - cpu_per_1000(plain),
                cpu_per_1000(plain),
                cpu_per_1000(secure),
                secure.outcome.p99_us as i64 - plain.outcome.p99_us as i64,
                plain.outcome.throughput,
                secure.outcome.throughput
            );
        }
    }
    for proxy in ["weft", "envoy"] {
        let (plain, secure) = (rss(r, proxy), rss(r, &format!("{proxy}-mtls")));
        if plain > 0.0 && secure > 0.0 {
            let _ = writeln!(md, "\nPeak RSS per {proxy} proxy: {plain:.1} MiB plaintext, {secure:.1} MiB with mTLS ({:+.1} MiB).", secure - plain);
        }
    }
    if !any {
        return String::new();
    }
    md.push('\n');
    md
}

/// One row of the goals table: the figure, its target, what was measured, and whether the
/// target was met (`None` when the run lacks what the figure needs).
struct Goal {
    figure: String,
    target: String,
    measured: String,
    met: Option<bool>,
}

/// A Weft/Envoy ratio's bound.
#[derive(Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

fn ratio_goal(figure: String, weft: f64, envoy: f64, bound: Bound) -> Goal {
    let r = weft / envoy;
    let (target, met) = match bound {
        Bound::AtMost(m) => (format!("≤ {m}×"), r <= m),
        Bound::AtLeast(m) => (format!("≥ {m}×"), r >= m),
    };
    Goal {
        figure,
        target,
        measured: format!("{} ({weft:.1} / {envoy:.1})", ratio(weft, envoy)),
        met: (envoy > 0.0).then_some(met),
    }
}

/// CPU per request at most half of Envoy's, on `what`.
fn cpu_goal(what: String, weft: &Measurement, envoy: &Measurement) -> Goal {
    let figure = format!("CPU ms / 1,000 requests, {what}");
    ratio_goal(
        figure,
        cpu_per_1000(weft),
        cpu_per_1000(envoy),
        Bound::AtMost(0.5),
    )
}

/// Throughput at least 1.5 times Envoy's, on `what`.
fn throughput_goal(what: String, weft: &Measurement, envoy: &Measurement) -> Goal {
    let (w, e) = (weft.outcome.throughput, envoy.outcome.throughput);
    ratio_goal(format!("req/s, {what}"), w, e, Bound::AtLeast(1.5))
}

/// Issue 14's goals, each with what this run measured: with mTLS between the hops when
/// the run has it, as the goals are stated; one hop and idle connections in plaintext
/// (the load generator holds no workload certificate).
fn goals(r: &Results, rate: u32) -> String {
    let w = workloads(rate);
    let (open, saturation, grpc, one_hop) = (w[0].name, w[1].name, w[2].name, w[3].name);
    let (weft_variant, envoy_variant, how) = if find(r, open, "envoy-mtls").is_some() {
        ("weft-mtls", "envoy-mtls", "with mTLS")
    } else {
        ("weft", "envoy", "plaintext")
    };
    let mut md = format!(
        "## Goals ({how}; one hop and idle connections plaintext)\n\n| figure | goal | measured, Weft/Envoy (Weft / Envoy) | met |\n| --- | --- | --- | --- |\n"
    );
    let pair = |workload: &str, weft: &str, envoy: &str| {
        Some((
            find(r, workload, "direct")?,
            find(r, workload, weft)?,
            find(r, workload, envoy)?,
        ))
    };
    let mut rows = Vec::new();
    if let Some((d, weft, envoy)) = pair(open, weft_variant, envoy_variant) {
        let added = |m: &Measurement, at: fn(&crate::load::Outcome) -> u64| {
            (at(&m.outcome) as f64 - at(&d.outcome) as f64).max(1.0)
        };
        rows.push(cpu_goal(format!("two hops, {open}"), weft, envoy));
        rows.push(ratio_goal(
            format!("added p99 µs, {open}"),
            added(weft, |o| o.p99_us),
            added(envoy, |o| o.p99_us),
            Bound::AtMost(0.5),
        ));
        rows.push(ratio_goal(
            format!("added p99.9 µs, {open}"),
            added(weft, |o| o.p999_us),
            added(envoy, |o| o.p999_us),
            Bound::AtMost(0.7),
        ));
    }
    if let Some((_, weft, envoy)) = pair(saturation, weft_variant, envoy_variant) {
        rows.push(cpu_goal(format!("two hops, {saturation}"), weft, envoy));
        rows.push(throughput_goal(
            format!("two hops, {saturation}"),
            weft,
            envoy,
        ));
    }
    if let Some((_, weft, envoy)) = pair(grpc, weft_variant, envoy_variant) {
        rows.push(cpu_goal(grpc.to_string(), weft, envoy));
    }
    let (weft_rss, envoy_rss) = (rss(r, weft_variant), rss(r, envoy_variant));
    if weft_rss > 0.0 {
        rows.push(Goal {
            figure: "peak RSS per sidecar, MiB".into(),
            target: "≤ 15 MiB (≤ 0.25×)".into(),
            measured: format!(
                "{weft_rss:.1} MiB, {} of {envoy_rss:.1}",
                ratio(weft_rss, envoy_rss)
            ),
            met: Some(weft_rss <= 15.0),
        });
    }
    if let Some((_, weft, envoy)) = pair(one_hop, "weft", "envoy") {
        rows.push(cpu_goal(one_hop.to_string(), weft, envoy));
        rows.push(throughput_goal(one_hop.to_string(), weft, envoy));
        let peak = |name: &str| {
            r.peak_rss_mib
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, m)| *m)
        };
        rows.push(ratio_goal(
            format!("peak RSS MiB, {one_hop} (the server side)"),
            peak("weft-server"),
            peak("envoy-server"),
            Bound::AtMost(0.25),
        ));
    }
    let idle = |variant: &str| {
        r.idle_connection_kib
            .iter()
            .find(|(v, _)| *v == variant)
            .map(|(_, k)| *k)
    };
    if let Some(weft) = idle("weft") {
        rows.push(Goal {
            figure: format!("KiB per idle downstream connection ({IDLE_CONNECTIONS} held)"),
            target: "≤ 8 KiB".into(),
            measured: match idle("envoy") {
                Some(envoy) => format!("{weft:.1} KiB, {} of {envoy:.1}", ratio(weft, envoy)),
                None => format!("{weft:.1} KiB"),
            },
            met: Some(weft <= 8.0),
        });
    }
    if rows.is_empty() {
        md.push_str("| (Envoy not run) | | | |\n");
    }
    for g in rows {
        let met = match g.met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "–",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {met} |",
            g.figure, g.target, g.measured
        );
    }
    md
}

/// (percentile, µs) points of one latency distribution.
type Curve = Vec<(f64, u64)>;

pub fn svg(r: &Results, rate: u32) -> String {
    let ws = workloads(rate);
    let (panel_w, panel_h, margin) = (420.0, 300.0, 50.0);
    let width = ws.len() as f64 * (panel_w + margin) + margin;
    let height = panel_h + 2.5 * margin;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let colours = [
        ("direct", "#888888"),
        ("weft", "#1f77b4"),
        ("envoy", "#ff7f0e"),
        ("weft-mtls", "#2ca02c"),
        ("envoy-mtls", "#d62728"),
    ];
    for (i, w) in ws.iter().enumerate() {
        let x0 = margin + i as f64 * (panel_w + margin);
        let y0 = margin;
        let lines: Vec<(&str, &str, &Curve)> = colours
            .iter()
            .filter_map(|(v, c)| find(r, w.name, v).map(|m| (*v, *c, &m.outcome.curve)))
            .collect();
        // Up to p99.9: the last points of short runs are single samples.
        let shown = |c: &Curve| c.iter().filter(|(p, _)| *p <= 99.9).count();
        let max = lines
            .iter()
            .flat_map(|(_, _, c)| c.iter().take(shown(c)).map(|(_, v)| *v))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let _ = writeln!(
            s,
            "<text x=\"{x0}\" y=\"{}\" font-size=\"13\">{}</text>",
            y0 - 15.0,
            w.name
        );
        let _ = writeln!(s, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{panel_w}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#ccc\"/>");
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\">{:.0} µs</text>",
            x0 + 4.0,
            y0 + 12.0,
            max
        );
        for (_, colour, curve) in &lines {
            let n = shown(curve).max(2);
            let points: Vec<String> = curve
                .iter()
                .take(n)
                .enumerate()
                .map(|(k, (_, v))| {
                    let x = x0 + panel_w * k as f64 / (n - 1) as f64;
                    let y = y0 + panel_h - panel_h * (*v as f64 / max);
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                points.join(" ")
            );
        }
        if let Some((_, _, curve)) = lines.first() {
            let n = shown(curve).max(2);
            for (k, (p, _)) in curve.iter().take(n).enumerate() {
                let x = x0 + panel_w * k as f64 / (n - 1) as f64;
                let _ = writeln!(
                    s,
                    "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">p{p}</text>",
                    y0 + panel_h + 14.0
                );
            }
        }
    }
    for (k, (name, colour)) in colours.iter().enumerate() {
        let x = margin + k as f64 * 90.0;
        let y = height - 15.0;
        let _ = writeln!(s, "<rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{colour}\"/><text x=\"{}\" y=\"{y}\">{name}</text>", y - 4.0, x + 18.0);
    }
    s.push_str("</svg>\n");
    s
}

pub fn write_all(r: &Results, rate: u32, out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(out.join("results.md"), markdown(r, rate))?;
    std::fs::write(out.join("latency.svg"), svg(r, rate))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::ProxyCost;
    use crate::load::Outcome;

    fn outcome(p99: u64, throughput: f64) -> Outcome {
        Outcome {
            requests: 1000,
            errors: 0,
            seconds: 1.0,
            throughput,
            p50_us: 100,
            p90_us: 150,
            p99_us: p99,
            p999_us: p99 * 2,
            max_us: p99 * 3,
            curve: vec![(50.0, 100), (99.0, p99), (99.9, p99 * 2)],
        }
    }

    fn measurement(
        workload: &'static str,
        variant: &'static str,
        p99: u64,
        cpu: f64,
        throughput: f64,
    ) -> Measurement {
        let proxies = if variant == "direct" {
            Vec::new()
        } else {
            vec![
                ProxyCost {
                    process: "client",
                    cpu_seconds: 0.1,
                    cpu_ms_per_1000_requests: cpu,
                },
                ProxyCost {
                    process: "server",
                    cpu_seconds: 0.1,
                    cpu_ms_per_1000_requests: cpu,
                },
            ]
        };
        Measurement {
            workload,
            variant,
            outcome: outcome(p99, throughput),
            proxies,
        }
    }

    #[test]
    fn tables_ratios_and_goals() {
        let mut measurements = Vec::new();
        for w in workloads(1000) {
            measurements.push(measurement(w.name, "direct", 200, 0.0, 100_000.0));
            measurements.push(measurement(w.name, "weft", 400, 10.0, 30_000.0));
            measurements.push(measurement(w.name, "envoy", 600, 40.0, 10_000.0));
            if w.hops == 2 {
                measurements.push(measurement(w.name, "weft-mtls", 500, 15.0, 25_000.0));
                measurements.push(measurement(w.name, "envoy-mtls", 800, 50.0, 8_000.0));
            }
        }
        let r = Results {
            workers: 2,
            duration_seconds: 1.0,
            measurements,
            peak_rss_mib: vec![
                ("weft-client", 16.0),
                ("envoy-client", 64.0),
                ("weft-mtls-client", 18.0),
                ("envoy-mtls-client", 72.0),
                ("weft-server", 14.0),
                ("envoy-server", 70.0),
            ],
            resident_peaks: vec![(
                "weft-client",
                crate::procfs::Resident {
                    anon_mib: 6.0,
                    file_mib: 9.5,
                },
            )],
            idle_connection_kib: vec![("weft", 6.5), ("envoy", 13.0)],
            envoy: Some("envoy".into()),
        };
        let md = markdown(&r, 1000);
        assert!(md.contains("| weft-client | 16.0 | 6.0 | 9.5 |"), "{md}");
        assert!(md.contains("| envoy-client | 64.0 | – | – |"), "{md}");
        assert!(md.contains("| weft | 30000 | 100 | 150 | 400 | 800 | 0 | 0 | 200 | 400 | 10.0 + 10.0 = 20.0 | 0 |"), "{md}");
        assert!(
            md.contains("Weft/Envoy: added p99 0.50×, CPU per request 0.25×, throughput 3.00×."),
            "{md}"
        );
        assert!(
            md.contains(
                "With mTLS, Weft/Envoy: added p99 0.50×, CPU per request 0.30×, throughput 3.12×."
            ),
            "{md}"
        );
        // The goals are read with mTLS, as they are stated.
        assert!(md.contains("## Goals (with mTLS;"), "{md}");
        for row in [
            "| CPU ms / 1,000 requests, two hops, http1-1kib-open-loop | ≤ 0.5× | 0.30× (30.0 / 100.0) | met |",
            "| added p99.9 µs, http1-1kib-open-loop | ≤ 0.7× | 0.50× (600.0 / 1200.0) | met |",
            "| peak RSS per sidecar, MiB | ≤ 15 MiB (≤ 0.25×) | 18.0 MiB, 0.25× of 72.0 | not met |",
            "| req/s, http1-1kib-one-hop | ≥ 1.5× | 3.00× (30000.0 / 10000.0) | met |",
            "| peak RSS MiB, http1-1kib-one-hop (the server side) | ≤ 0.25× | 0.20× (14.0 / 70.0) | met |",
            "| KiB per idle downstream connection (1000 held) | ≤ 8 KiB | 6.5 KiB, 0.50× of 13.0 | met |",
        ] {
            assert!(md.contains(row), "{row} in {md}");
        }
        assert!(
            md.contains(
                "| http1-1kib-open-loop | weft | +10.0 (20.0 → 30.0) | +100 | 30000 → 25000 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "Peak RSS per weft proxy: 16.0 MiB plaintext, 18.0 MiB with mTLS (+2.0 MiB)."
            ),
            "{md}"
        );
        let svg = svg(&r, 1000);
        assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 18);
    }
}

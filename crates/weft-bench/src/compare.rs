//! Direct, Weft and Envoy measured in the same run, interleaved workload by workload, with
//! the CPU each proxy process spent and its peak RSS.

use crate::load::{self, Load, Mode, Outcome, Protocol};
use crate::procfs;
use crate::topology::{self, Process, Topology, AUTHORITY};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Options {
    pub weft_bin: PathBuf,
    pub envoy_bin: Option<PathBuf>,
    pub out: PathBuf,
    pub duration: Duration,
    pub rate: u32,
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub name: &'static str,
    pub protocol: Protocol,
    pub mode: Mode,
    pub connections: usize,
    /// 2: client-side proxy, server-side proxy, upstream; 1: server-side proxy, upstream.
    pub hops: usize,
}

/// How many idle connections a proxy holds when its memory per connection is measured.
pub const IDLE_CONNECTIONS: usize = 1000;

/// Istio's published set-up (1 KiB at 1,000 rps over 16 connections), saturation over 64
/// connections, gRPC unary, and one hop at saturation (issue 14's wrk shape).
pub fn workloads(rate: u32) -> Vec<Workload> {
    vec![
        Workload {
            name: "http1-1kib-open-loop",
            protocol: Protocol::Http1,
            mode: Mode::OpenLoop { rate },
            connections: 16,
            hops: 2,
        },
        Workload {
            name: "http1-1kib-saturation",
            protocol: Protocol::Http1,
            mode: Mode::ClosedLoop,
            connections: 64,
            hops: 2,
        },
        Workload {
            name: "grpc-unary-open-loop",
            protocol: Protocol::GrpcUnary,
            mode: Mode::OpenLoop { rate },
            connections: 16,
            hops: 2,
        },
        Workload {
            name: "http1-1kib-one-hop",
            protocol: Protocol::Http1,
            mode: Mode::ClosedLoop,
            connections: 64,
            hops: 1,
        },
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyCost {
    pub process: &'static str,
    pub cpu_seconds: f64,
    pub cpu_ms_per_1000_requests: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub workload: &'static str,
    pub variant: &'static str,
    pub outcome: Outcome,
    pub proxies: Vec<ProxyCost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub workers: usize,
    pub duration_seconds: f64,
    pub measurements: Vec<Measurement>,
    /// Peak RSS of each proxy process over the whole run, MiB.
    pub peak_rss_mib: Vec<(&'static str, f64)>,
    /// The largest anonymous and file-backed resident sizes of each proxy process, sampled
    /// every 100 ms while the measured loads ran.
    pub resident_peaks: Vec<(&'static str, procfs::Resident)>,
    /// Growth of the client-side proxy's RSS per idle downstream connection, KiB, by
    /// plaintext variant; measured after the peak RSS was read.
    pub idle_connection_kib: Vec<(&'static str, f64)>,
    pub envoy: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    #[error(transparent)]
    Load(#[from] load::LoadError),
    #[error(transparent)]
    Proc(#[from] procfs::ProcError),
    #[error("the mTLS pairs did not use mTLS: {0}")]
    NotMtls(String),
}

/// What a workload runs against: the upstream directly, then each pair; one hop goes to a
/// plaintext pair's server side (the load generator holds no workload certificate).
fn variants(t: &Topology, hops: usize) -> Vec<(&'static str, SocketAddr, Vec<&Process>)> {
    let mut v = vec![(
        "direct",
        topology::UPSTREAM.parse().expect("valid address"),
        Vec::new(),
    )];
    for p in &t.pairs {
        if hops == 2 {
            v.push((p.variant, p.entry, p.proxies.iter().collect()));
        } else if !p.variant.ends_with("-mtls") {
            v.push((p.variant, p.server, vec![&p.proxies[1]]));
        }
    }
    v
}

/// RSS once it has stopped moving: two readings 200 ms apart within 64 KiB, or the last
/// of 25 readings (the allocators return freed pages on their own schedules).
async fn settled_rss_kib(pid: u32) -> Result<f64, procfs::ProcError> {
    let mut last = procfs::rss_mib(pid)? * 1024.0;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = procfs::rss_mib(pid)? * 1024.0;
        if (now - last).abs() <= 64.0 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Runs `work`, raising `peaks` to each process's resident memory every 100 ms meanwhile.
async fn sampling_resident<T>(
    processes: &[&Process],
    peaks: &mut [procfs::Resident],
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                for (peak, p) in peaks.iter_mut().zip(processes) {
                    if let Ok(now) = procfs::resident(p.pid()) {
                        peak.raise(now);
                    }
                }
            }
        }
    }
}

/// RSS growth of `proxy` per connection while it holds [`IDLE_CONNECTIONS`] idle ones, KiB.
async fn idle_connection_kib(load: &Load, proxy: &Process) -> Result<f64, CompareError> {
    let before = settled_rss_kib(proxy.pid()).await?;
    let idle = load::open_idle(&Load {
        connections: IDLE_CONNECTIONS,
        ..load.clone()
    })
    .await?;
    let after = settled_rss_kib(proxy.pid()).await?;
    drop(idle);
    Ok((after - before) / IDLE_CONNECTIONS as f64)
}

fn http1_load(target: SocketAddr, mode: Mode, connections: usize) -> Load {
    Load {
        target,
        authority: AUTHORITY.to_string(),
        path: "/bench/1kib".into(),
        protocol: Protocol::Http1,
        mode,
        connections,
        duration: Duration::from_secs(1),
    }
}

pub async fn run(opts: &Options) -> Result<Results, CompareError> {
    let logs = opts.out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| topology::TopologyError::Write(logs.clone(), e))?;
    let t = topology::start(
        &opts.weft_bin,
        opts.envoy_bin.as_deref(),
        opts.workers,
        &logs,
    )
    .await?;
    let mut measurements = Vec::new();
    let all: Vec<&Process> = t.pairs.iter().flat_map(|pair| &pair.proxies).collect();
    let mut resident = vec![procfs::Resident::default(); all.len()];
    for w in workloads(opts.rate) {
        for (variant, target, proxies) in variants(&t, w.hops) {
            let load = match w.protocol {
                Protocol::Http1 => http1_load(target, w.mode, w.connections),
                Protocol::GrpcUnary => Load {
                    authority: AUTHORITY.replace(":8080", ":8081"),
                    path: "/weft.bench.Bench/Unary".into(),
                    protocol: w.protocol,
                    ..http1_load(target, w.mode, w.connections)
                },
            };
            // Warm up connection pools and allocators, then measure.
            load::run(&load).await?;
            let before: Vec<f64> = proxies
                .iter()
                .map(|p| procfs::cpu_seconds(p.pid()))
                .collect::<Result<_, _>>()?;
            let outcome = sampling_resident(
                &all,
                &mut resident,
                load::run(&Load {
                    duration: opts.duration,
                    ..load
                }),
            )
            .await?;
            let mut costs = Vec::new();
            for (p, start) in proxies.iter().zip(before) {
                let cpu = procfs::cpu_seconds(p.pid())? - start;
                costs.push(ProxyCost {
                    process: p.name,
                    cpu_seconds: cpu,
                    cpu_ms_per_1000_requests: cpu * 1000.0 * 1000.0
                        / outcome.requests.max(1) as f64,
                });
            }
            eprintln!(
                "{:<24} {:<7} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  errors {}",
                w.name,
                variant,
                outcome.throughput,
                outcome.p50_us,
                outcome.p99_us,
                outcome.p999_us,
                outcome.errors
            );
            measurements.push(Measurement {
                workload: w.name,
                variant,
                outcome,
                proxies: costs,
            });
        }
    }
    topology::check_mtls(&t).await?;
    let mut peak_rss_mib = Vec::new();
    for p in t.pairs.iter().flat_map(|pair| &pair.proxies) {
        peak_rss_mib.push((p.name, procfs::peak_rss_mib(p.pid())?));
    }
    let resident_peaks = all.iter().map(|p| p.name).zip(resident).collect();
    let mut idle = Vec::new();
    for pair in t.pairs.iter().filter(|p| !p.variant.ends_with("-mtls")) {
        let load = http1_load(pair.entry, Mode::ClosedLoop, 1);
        let kib = idle_connection_kib(&load, &pair.proxies[0]).await?;
        eprintln!(
            "{:<24} {:<7} {kib:>6.1} KiB per idle downstream connection",
            "idle-connections", pair.variant
        );
        idle.push((pair.variant, kib));
    }
    Ok(Results {
        workers: opts.workers,
        duration_seconds: opts.duration.as_secs_f64(),
        measurements,
        peak_rss_mib,
        resident_peaks,
        idle_connection_kib: idle,
        envoy: opts.envoy_bin.as_ref().map(|p| p.display().to_string()),
    })
}

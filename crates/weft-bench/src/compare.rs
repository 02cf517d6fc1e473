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
}

/// Istio's published set-up (1 KiB at 1,000 rps over 16 connections), saturation over 64
/// connections, and gRPC unary.
pub fn workloads(rate: u32) -> Vec<Workload> {
    vec![
        Workload {
            name: "http1-1kib-open-loop",
            protocol: Protocol::Http1,
            mode: Mode::OpenLoop { rate },
            connections: 16,
        },
        Workload {
            name: "http1-1kib-saturation",
            protocol: Protocol::Http1,
            mode: Mode::ClosedLoop,
            connections: 64,
        },
        Workload {
            name: "grpc-unary-open-loop",
            protocol: Protocol::GrpcUnary,
            mode: Mode::OpenLoop { rate },
            connections: 16,
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

fn variants(t: &Topology) -> Vec<(&'static str, SocketAddr, Vec<&Process>)> {
    let mut v = vec![(
        "direct",
        topology::UPSTREAM.parse().expect("valid address"),
        Vec::new(),
    )];
    v.extend(
        t.pairs
            .iter()
            .map(|p| (p.variant, p.entry, p.proxies.iter().collect())),
    );
    v
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
    for w in workloads(opts.rate) {
        for (variant, target, proxies) in variants(&t) {
            let load = Load {
                target,
                authority: match w.protocol {
                    Protocol::Http1 => AUTHORITY.to_string(),
                    Protocol::GrpcUnary => AUTHORITY.replace(":8080", ":8081"),
                },
                path: match w.protocol {
                    Protocol::Http1 => "/bench/1kib".into(),
                    Protocol::GrpcUnary => "/weft.bench.Bench/Unary".into(),
                },
                protocol: w.protocol,
                mode: w.mode,
                connections: w.connections,
                duration: Duration::from_secs(1),
            };
            // Warm up connection pools and allocators, then measure.
            load::run(&load).await?;
            let before: Vec<f64> = proxies
                .iter()
                .map(|p| procfs::cpu_seconds(p.pid()))
                .collect::<Result<_, _>>()?;
            let outcome = load::run(&Load {
                duration: opts.duration,
                ..load
            })
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
    Ok(Results {
        workers: opts.workers,
        duration_seconds: opts.duration.as_secs_f64(),
        measurements,
        peak_rss_mib,
        envoy: opts.envoy_bin.as_ref().map(|p| p.display().to_string()),
    })
}

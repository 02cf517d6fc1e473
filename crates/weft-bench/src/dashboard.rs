//! `weft bench dashboard`: what the dashboard's aggregator costs the control plane with
//! many proxies. Simulated proxies connect as in `weft bench control-plane`, each announcing
//! an address whose `:15020/stats/prometheus` serves the series a sidecar with one caller
//! and one callee reports, counters growing as under steady traffic. The control plane runs
//! twice on the same mesh, once with `--no-dashboard` and once scraping them all, and each
//! run's CPU and memory are read over the same window.

use crate::control_plane::mesh_gen::{self, MeshSpec};
use crate::control_plane::{check_open_files, proxies, BenchError, ControlProcess, Tasks};
use crate::control_plane::{GRPC, MONITORING};
use crate::procfs;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use std::collections::HashSet;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where the measured control plane serves the dashboard.
const DASHBOARD: &str = "127.0.0.41:20001";
/// Istio's merged metrics port, where simulated proxy `i` listens on [`address`]`(i)`.
const STATS_PORT: u16 = 15020;
/// Istio's default buckets, for milliseconds and bytes alike, as the proxy writes them.
const BUCKETS: [&str; 20] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
];
/// Per mille of requests at or under each bound: latencies of a few milliseconds, bodies of
/// a few hundred bytes.
const LATENCY: [u64; 20] = [
    0, 10, 300, 600, 900, 970, 990, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000,
    1000, 1000, 1000,
];
const SIZE: [u64; 20] = [
    0, 0, 0, 0, 0, 0, 50, 400, 900, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000,
    1000,
];
/// What [`exposition`] serves: two edges, each a request counter and three histograms.
const SERIES_PER_PROXY: usize = 2 * (1 + 3 * BUCKETS.len());
/// Requests per second on each of a proxy's two edges.
const RATE: f64 = 2.0;

#[derive(Debug, Clone)]
pub struct Options {
    pub mesh: MeshSpec,
    pub proxies: usize,
    /// How long each run's CPU and memory are read over, once every proxy is scraped.
    pub window: Duration,
    pub scrape_interval: Duration,
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mesh: MeshSpec::default(),
            proxies: 1000,
            window: Duration::from_secs(120),
            scrape_interval: Duration::from_secs(15),
            timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunCost {
    /// CPU seconds per minute over the window (user + system), i.e. % of a core × 0.6.
    pub cpu_seconds_per_minute: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Store {
    pub series: u64,
    pub samples: u64,
    pub bytes: u64,
    pub refused_series: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub mesh: MeshSpec,
    pub proxies: usize,
    pub series_per_proxy: usize,
    pub scrape_interval_seconds: u64,
    pub window_seconds: u64,
    pub without_dashboard: RunCost,
    pub with_dashboard: RunCost,
    /// The aggregator's store at the end of the window.
    pub store: Store,
    /// `GET /api/namespaces/graph` over every namespace, 10 minutes, versioned apps: the
    /// slowest of five.
    pub graph_ms: f64,
    /// `GET /api/weft/services`: the slowest of five.
    pub services_ms: f64,
}

/// Simulated proxy `i`'s address: 127.1.0.1 upwards, 250 to a /24.
pub fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        1 + (i / 62_500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    )
}

fn workload(i: usize) -> String {
    format!("wl-{i}")
}

/// The kept series a sidecar with one caller and one callee exposes, counters at what
/// `seconds` of steady traffic make; `i`'s caller is `i - 1` and its callee `i + 1`.
pub fn exposition(i: usize, proxies: usize, namespaces: usize, seconds: f64) -> String {
    let requests = (seconds * RATE) as u64;
    let ns = |p: usize| mesh_gen::namespace(p % namespaces);
    let (caller, callee) = ((i + proxies - 1) % proxies, (i + 1) % proxies);
    let mut text = String::with_capacity(64 << 10);
    for (reporter, source, destination) in [("source", i, callee), ("destination", caller, i)] {
        let labels = edge_labels(reporter, source, &ns(source), destination, &ns(destination));
        let _ = writeln!(
            text,
            "istio_requests_total{{{labels},response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"}} {requests}"
        );
        for (name, shares) in [
            ("istio_request_duration_milliseconds", &LATENCY),
            ("istio_request_bytes", &SIZE),
            ("istio_response_bytes", &SIZE),
        ] {
            for (le, share) in BUCKETS.iter().zip(shares) {
                let _ = writeln!(
                    text,
                    "{name}_bucket{{le=\"{le}\",{labels},response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"}} {}",
                    requests * share / 1000
                );
            }
        }
    }
    text
}

fn edge_labels(reporter: &str, source: usize, sns: &str, destination: usize, dns: &str) -> String {
    let (s, d) = (workload(source), workload(destination));
    format!(
        "reporter=\"{reporter}\",source_workload=\"{s}\",source_canonical_service=\"{s}\",\
         source_canonical_revision=\"v1\",source_workload_namespace=\"{sns}\",\
         source_principal=\"unknown\",source_app=\"{s}\",source_version=\"v1\",\
         source_cluster=\"Kubernetes\",destination_workload=\"{d}\",\
         destination_workload_namespace=\"{dns}\",destination_principal=\"unknown\",\
         destination_app=\"{d}\",destination_version=\"v1\",\
         destination_service=\"{d}.{dns}.svc.cluster.local\",\
         destination_canonical_service=\"{d}\",destination_canonical_revision=\"v1\",\
         destination_service_name=\"{d}\",destination_service_namespace=\"{dns}\",\
         destination_cluster=\"Kubernetes\",request_protocol=\"http\""
    )
}

/// Serves every simulated proxy's `:15020/stats/prometheus` until dropped.
async fn serve_stats(opts: &Options, started: Instant) -> Result<Tasks, BenchError> {
    let mut tasks = Vec::with_capacity(opts.proxies);
    for i in 0..opts.proxies {
        let addr = SocketAddr::new(IpAddr::V4(address(i)), STATS_PORT);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| BenchError::Options(format!("cannot listen on {addr}: {e}")))?;
        let (proxies, namespaces) = (opts.proxies, opts.mesh.namespaces);
        tasks.push(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                        let seconds = started.elapsed().as_secs_f64();
                        let body = exposition(i, proxies, namespaces, seconds);
                        let response = Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(body)));
                        async move { response }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }
    Ok(Tasks(tasks))
}

/// Runs the control plane without, then with, the dashboard; the control plane's log goes
/// to `out`.
pub async fn run(opts: &Options, weft_bin: &Path, out: &Path) -> Result<Results, BenchError> {
    opts.mesh.validate().map_err(BenchError::Options)?;
    if opts.proxies == 0 || opts.proxies > 250 * 250 {
        return Err(BenchError::Options(
            "between 1 and 62500 simulated proxies".into(),
        ));
    }
    // A discovery stream and a scrape connection per proxy, on both ends.
    check_open_files(opts.proxies * 3)?;
    std::fs::create_dir_all(out).map_err(|e| BenchError::Write(out.to_path_buf(), e))?;
    let config =
        mesh_gen::generate(&opts.mesh).map_err(|e| BenchError::Write(std::env::temp_dir(), e))?;
    let _stats = serve_stats(opts, Instant::now()).await?;
    let interval = opts.scrape_interval.as_secs().max(1).to_string();
    let without_dashboard = measure(opts, weft_bin, config.path(), &["--no-dashboard"], out)
        .await?
        .0;
    let dashboard_args = ["--dashboard", DASHBOARD, "--scrape-interval", &interval];
    let (with_dashboard, api) =
        measure(opts, weft_bin, config.path(), &dashboard_args, out).await?;
    let api = api.expect("the dashboard run reads the API");
    Ok(Results {
        mesh: opts.mesh,
        proxies: opts.proxies,
        series_per_proxy: SERIES_PER_PROXY,
        scrape_interval_seconds: opts.scrape_interval.as_secs(),
        window_seconds: opts.window.as_secs(),
        without_dashboard,
        with_dashboard,
        store: api.store,
        graph_ms: api.graph_ms,
        services_ms: api.services_ms,
    })
}

struct ApiFigures {
    store: Store,
    graph_ms: f64,
    services_ms: f64,
}

/// One control plane with `args`: every proxy connected and synced, then (with the
/// dashboard) every proxy's series stored, then the window.
async fn measure(
    opts: &Options,
    weft_bin: &Path,
    config: &Path,
    args: &[&str],
    out: &Path,
) -> Result<(RunCost, Option<ApiFigures>), BenchError> {
    for addr in [GRPC, MONITORING, DASHBOARD] {
        drop(std::net::TcpListener::bind(addr).map_err(|e| BenchError::Busy(addr, e))?);
    }
    // Each simulated proxy announces its address without the mesh's join token, so it is
    // scraped but made no endpoint, and the control plane warns once for each: a log kept
    // with the others, out of the results.
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| BenchError::Write(logs.clone(), e))?;
    let log = logs.join("dashboard.log");
    let mut control = ControlProcess::spawn(weft_bin, config, args, &log)?;
    let pid = control.child.id();
    let grpc: SocketAddr = GRPC.parse().expect("a valid address");
    let token_file = weft_discovery::credentials::admin_token_file(config);
    control
        .wait_ready(grpc, &token_file, opts.timeout, &log)
        .await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _proxies = Tasks(
        (0..opts.proxies)
            .map(|i| {
                let ns = mesh_gen::namespace(i % opts.mesh.namespaces);
                let mut hello = proxies::hello(i, ns);
                hello.address = address(i).to_string();
                hello.stats_port = u32::from(STATS_PORT);
                hello.labels.insert("app".into(), workload(i));
                hello.labels.insert("version".into(), "v1".into());
                proxies::spawn(i, grpc, hello, false, tx.clone())
            })
            .collect(),
    );
    drop(tx);
    let deadline = Instant::now() + opts.timeout;
    let mut synced = HashSet::new();
    while synced.len() < opts.proxies {
        let event = tokio::time::timeout_at(deadline, rx.recv()).await;
        match event {
            Ok(Some(e)) => match e.what {
                proxies::What::Update { .. } => {
                    synced.insert(e.proxy);
                }
                proxies::What::Failed(why) => return Err(BenchError::Options(why)),
                proxies::What::Retried => {}
            },
            _ => {
                return Err(BenchError::Snapshot {
                    waiting: opts.proxies - synced.len(),
                    proxies: opts.proxies,
                    timeout: opts.timeout,
                })
            }
        }
    }
    // Later updates are not this measurement's concern, but must not back up.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let dashboard = args.contains(&"--dashboard");
    if dashboard {
        let want = (opts.proxies * SERIES_PER_PROXY) as u64;
        let mut held = None;
        let filled = async {
            loop {
                held = store(DASHBOARD).await.ok();
                if held.as_ref().is_some_and(|s| s.series >= want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        if tokio::time::timeout_at(deadline, filled).await.is_err() {
            return Err(BenchError::Options(format!(
                "the aggregator did not hold {want} series within {:?}: {held:?}",
                opts.timeout
            )));
        }
    }
    let cpu = procfs::cpu_seconds(pid)?;
    // The window is what is measured: a fixed span of steady state, not a wait for an event.
    tokio::time::sleep(opts.window).await;
    let cost = RunCost {
        cpu_seconds_per_minute: (procfs::cpu_seconds(pid)? - cpu) * 60.0
            / opts.window.as_secs_f64(),
        rss_mib: procfs::rss_mib(pid)?,
        peak_rss_mib: procfs::peak_rss_mib(pid)?,
    };
    let api = if dashboard {
        let namespaces: Vec<String> = (0..opts.mesh.namespaces).map(mesh_gen::namespace).collect();
        let graph = format!(
            "/api/namespaces/graph?namespaces={}&graphType=versionedApp&duration=600s",
            namespaces.join(",")
        );
        Some(ApiFigures {
            store: store(DASHBOARD).await?,
            graph_ms: slowest_of_five(&graph).await?,
            services_ms: slowest_of_five("/api/weft/services").await?,
        })
    } else {
        None
    };
    if std::fs::metadata(&log).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&log);
    }
    Ok((cost, api))
}

async fn store(dashboard: &str) -> Result<Store, BenchError> {
    let body = get(dashboard, "/api/weft/status").await?;
    let status: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| BenchError::Options(format!("/api/weft/status: {e}")))?;
    let m = &status["metrics"];
    let n = |k: &str| m[k].as_u64().unwrap_or(0);
    Ok(Store {
        series: n("series"),
        samples: n("samples"),
        bytes: n("bytes"),
        refused_series: n("refusedSeries"),
    })
}

async fn slowest_of_five(path: &str) -> Result<f64, BenchError> {
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        get(DASHBOARD, path).await?;
        slowest = slowest.max(started.elapsed());
    }
    Ok(slowest.as_secs_f64() * 1000.0)
}

/// The body of `GET path` on the dashboard; anything but a 200 is an error.
async fn get(dashboard: &str, path: &str) -> Result<Vec<u8>, BenchError> {
    crate::plain_get(dashboard, path)
        .await
        .map_err(BenchError::Options)
}

/// The results as a page of bench/results.
pub fn markdown(r: &Results) -> String {
    let m = &r.mesh;
    let mut md = format!(
        "# The dashboard's aggregator at scale\n\n{} simulated proxies, each serving the {} series a sidecar with one caller and one callee reports (counters growing at {RATE} requests/s per edge), scraped every {} s; {} services × {} endpoints over {} namespaces. The control plane runs twice on the same mesh, with `--no-dashboard` and with the dashboard; CPU and memory are read over the same {} s window once every proxy is synced (and scraped).\n\n",
        r.proxies,
        r.series_per_proxy,
        r.scrape_interval_seconds,
        m.services,
        m.endpoints_per_service,
        m.namespaces,
        r.window_seconds,
    );
    md.push_str("| | without dashboard | with dashboard |\n| --- | --- | --- |\n");
    let (a, b) = (&r.without_dashboard, &r.with_dashboard);
    let _ = writeln!(
        md,
        "| CPU, seconds per minute | {:.2} | {:.2} |",
        a.cpu_seconds_per_minute, b.cpu_seconds_per_minute
    );
    let _ = writeln!(
        md,
        "| RSS at the end, MiB | {:.0} | {:.0} |",
        a.rss_mib, b.rss_mib
    );
    let _ = writeln!(
        md,
        "| peak RSS, MiB | {:.0} | {:.0} |",
        a.peak_rss_mib, b.peak_rss_mib
    );
    let s = &r.store;
    let _ = write!(
        md,
        "\nThe aggregator's store: {} series, {} samples in {:.1} MiB ({:.1} bytes per sample, series included); {} series refused. `GET /api/namespaces/graph` over all {} namespaces, 10 minutes: {:.0} ms (slowest of five); `GET /api/weft/services`: {:.0} ms.\n",
        s.series,
        s.samples,
        s.bytes as f64 / (1 << 20) as f64,
        s.bytes as f64 / s.samples.max(1) as f64,
        s.refused_series,
        m.namespaces,
        r.graph_ms,
        r.services_ms
    );
    md
}

pub fn write(r: &Results, out: &Path) -> Result<String, BenchError> {
    let md = markdown(r);
    let json = serde_json::to_string_pretty(r).expect("results serialize");
    for (name, text) in [("dashboard.md", &md), ("dashboard.json", &json)] {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| BenchError::Write(path, e))?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback() {
        let all: HashSet<Ipv4Addr> = (0..62_500).map(address).collect();
        assert_eq!(all.len(), 62_500);
        assert!(all.iter().all(|a| a.is_loopback() && a.octets()[3] != 0));
    }

    #[test]
    fn the_exposition_is_a_sidecars() {
        let text = exposition(3, 10, 2, 100.0);
        assert_eq!(text.lines().count(), SERIES_PER_PROXY);
        assert!(text.contains("reporter=\"destination\",source_workload=\"wl-2\""));
        assert!(text.contains("destination_service=\"wl-4.ns-0.svc.cluster.local\""));
        let requests = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{reporter=\"source\""))
            .unwrap();
        assert!(requests.ends_with(" 200"), "{requests}");
        let inf = text
            .lines()
            .find(|l| l.starts_with("istio_request_duration_milliseconds_bucket{le=\"+Inf\""))
            .unwrap();
        assert!(inf.ends_with(" 200"), "{inf}");
    }
}

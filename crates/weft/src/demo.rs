//! `weft demo`: Istio's Bookinfo on the local platform, as `weft up` runs a mesh file, with
//! the ingress gateway on 127.0.0.1:8080. Once the page answers it says where to look and
//! what to try, and with `--load RPS` keeps steady traffic on the page until the mesh stops.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_bench::load::{Load, Mode, Protocol};
use weft_platform::state::StateDir;
use weft_platform::up::{up, UpOptions};

/// The mesh, in the binary: the demo needs nothing from the checkout at run time.
const MESH: &str = include_str!("../../../examples/bookinfo/mesh.yaml");

/// Where the mesh file's gateway listens on the host, as Istio's bookinfo-gateway says.
const GATEWAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// `weft up` and the CLI's defaults: the printed commands need no flags when these hold.
const DEFAULT_CONTROL_PLANE: &str = "127.0.0.1:15012";

/// How long the pods and the page get before the demo says where to look instead.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// Each load run reconnects, so a connection the gateway closed costs one run, not the rest.
const LOAD_WINDOW: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Send this many requests a second to the productpage through the gateway, in the
    /// background, while the demo runs (open loop, a summary every 10 s).
    #[arg(long, value_name = "RPS", value_parser = clap::value_parser!(u32).range(1..))]
    load: Option<u32>,
    /// Where the mesh keeps its config, logs and status (default: $TMPDIR/weft-<uid>).
    #[arg(long, env = "WEFT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Start from the built-in Bookinfo config: forget what earlier demos applied (they are
    /// restored otherwise, and the demo says so).
    #[arg(long)]
    fresh: bool,
    #[command(flatten)]
    prometheus: crate::platform::PrometheusArgs,
    /// Where the control plane's trace collector (Zipkin's v2 API) listens on the host.
    #[arg(long, default_value = "127.0.0.1:9411")]
    zipkin_address: SocketAddr,
    /// Where the dashboard listens on the host.
    #[arg(long, default_value = "127.0.0.1:20001")]
    dashboard_address: SocketAddr,
}

pub fn run(args: DemoArgs, control_plane: &str) -> anyhow::Result<()> {
    let control_plane: SocketAddr = control_plane
        .trim_start_matches("https://")
        .parse()
        .with_context(|| {
            format!("--control-plane {control_plane:?}: weft demo needs an IP:port to listen on")
        })?;
    let state = StateDir {
        root: args.state_dir.unwrap_or_else(StateDir::default_root),
    };
    std::fs::create_dir_all(&state.root)
        .with_context(|| format!("creating the state directory {}", state.root.display()))?;
    let mesh_file = std::path::absolute(state.root.join("bookinfo.yaml"))?;
    std::fs::write(&mesh_file, MESH).with_context(|| format!("writing {}", mesh_file.display()))?;
    let pods = weft_platform::plan::plan(&weft_platform::mesh::parse(MESH, &mesh_file)?)?
        .pods
        .len();
    let opts = UpOptions {
        mesh_file,
        state: state.clone(),
        weft: std::env::current_exe()?,
        control_plane,
        ready_within: READY_WITHIN,
        fresh: args.fresh,
        // Istio's demo profile ships the addons; the demo runs Prometheus when it can.
        prometheus: args.prometheus.addon(args.prometheus.prometheus)?,
        zipkin: args.zipkin_address,
        dashboard: args.dashboard_address,
        scrape_interval: Duration::from_secs(args.prometheus.scrape_interval),
    };
    let guide = Guide {
        state,
        pods,
        control_plane,
        load: args.load,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            // `up` stays in the foreground until Ctrl-C or `weft down`; the guide follows the
            // mesh it starts and goes with it.
            let guide = tokio::spawn(guide.run());
            let outcome = up(opts).await;
            guide.abort();
            outcome
        })?;
    Ok(())
}

struct Guide {
    state: StateDir,
    pods: usize,
    control_plane: SocketAddr,
    load: Option<u32>,
}

impl Guide {
    async fn run(self) {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        let mut warned = false;
        while !self.ready().await {
            // A slow machine may still get there: say where to look, and keep waiting.
            if !warned && tokio::time::Instant::now() >= deadline {
                let env = self.environment();
                let shell = if env.is_empty() {
                    String::new()
                } else {
                    format!(" (after export {})", env.join(" "))
                };
                eprintln!(
                    "the page does not answer at http://{GATEWAY}/productpage yet: weft status and weft logs WORKLOAD [--proxy] say why{shell}"
                );
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!("{}", self.next_steps());
        if let Some(rate) = self.load {
            drive(rate).await;
        }
    }

    /// Every pod of *this* `weft up` is ready and the page renders whole through the
    /// gateway. The pid file tells our mesh from one another `weft up` runs in the same
    /// state directory (which makes `up` fail, but its status file could look ready).
    async fn ready(&self) -> bool {
        let ours = std::fs::read_to_string(self.state.pid_file()).is_ok_and(|pids| {
            pids.lines().next().map(str::trim) == Some(&std::process::id().to_string())
        });
        let pods_ready = ours
            && self.state.read_status().is_ok_and(|status| {
                status.pods.len() == self.pods && status.pods.iter().all(|p| p.ready)
            });
        pods_ready && page_renders().await
    }

    /// What another shell needs for plain `weft` commands to reach this mesh: this binary
    /// on PATH, and the control plane and state directory when they are not the defaults.
    fn environment(&self) -> Vec<String> {
        let mut env = Vec::new();
        if let Some(dir) = binary_dir_off_path() {
            env.push(format!("PATH=\"{}:$PATH\"", dir.display()));
        }
        if self.control_plane.to_string() != DEFAULT_CONTROL_PLANE {
            env.push(format!("WEFT_CONTROL_PLANE={}", self.control_plane));
        }
        if self.state.root != StateDir::default_root() {
            env.push(format!("WEFT_STATE_DIR={}", self.state.root.display()));
        }
        env
    }

    fn next_steps(&self) -> String {
        let networking = "samples/bookinfo/networking";
        let tasks = [
            (
                "virtual-service-all-v1.yaml",
                "every user: reviews v1, no stars",
            ),
            (
                "virtual-service-reviews-test-v2.yaml",
                "signed in as jason: black stars (v2)",
            ),
            (
                "virtual-service-ratings-test-delay.yaml",
                "jason: ~6 s, then reviews unavailable",
            ),
            (
                "virtual-service-ratings-test-abort.yaml",
                "jason: ratings service unavailable",
            ),
            (
                "virtual-service-reviews-50-v3.yaml",
                "red stars (v3) half the time",
            ),
            ("virtual-service-reviews-v3.yaml", "red stars always"),
        ];
        let width = tasks.iter().map(|(file, _)| file.len()).max().unwrap_or(0);
        let mut out = format!(
            "\nBookinfo is up: http://{GATEWAY}/productpage (sign in as jason, any password)\n\n"
        );
        let env = self.environment();
        if !env.is_empty() {
            out.push_str(&format!(
                "In another shell, first:\n  export {}\n\n",
                env.join(" ")
            ));
        }
        out.push_str(&format!(
            "Look around:\n  weft status\n  weft proxy-status\n  \
             weft logs productpage-v1 --proxy\n\n\
             Istio's traffic-management tasks apply unchanged, with the files from an Istio \
             release's {networking}/:\n"
        ));
        for (file, what) in tasks {
            out.push_str(&format!(
                "  weft apply -f {networking}/{file:width$}   # {what}\n"
            ));
        }
        out.push_str("\nweft down (or Ctrl-C here) stops everything.");
        out
    }
}

/// This binary's directory, unless PATH already finds this very binary as `weft`.
fn binary_dir_off_path() -> Option<PathBuf> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .ok()?;
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::canonicalize(dir.join("weft")).is_ok_and(|found| found == exe))
    });
    if on_path {
        return None;
    }
    exe.parent().map(Path::to_path_buf)
}

/// One GET of the page through the gateway: 200, and details and reviews both answered.
async fn page_renders() -> bool {
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(GATEWAY).await?;
        conn.write_all(
            format!("GET /productpage HTTP/1.1\r\nHost: {GATEWAY}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut page = Vec::new();
        conn.read_to_end(&mut page).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&page).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), fetch).await {
        Ok(Ok(page)) => page.starts_with("HTTP/1.1 200") && !page.contains("class=\"error\""),
        _ => false,
    }
}

/// Open-loop GETs of the page through the gateway, forever, with a line per window.
async fn drive(rate: u32) {
    // About ten requests a second per connection leaves each room for a slow page.
    let connections = rate.div_ceil(10).clamp(1, 64) as usize;
    let load = Load {
        target: GATEWAY,
        authority: GATEWAY.to_string(),
        path: "/productpage".into(),
        protocol: Protocol::Http1,
        mode: Mode::OpenLoop { rate },
        connections,
        duration: LOAD_WINDOW,
    };
    eprintln!("load: {rate} requests/s to http://{GATEWAY}/productpage");
    loop {
        match weft_bench::load::run(&load).await {
            Ok(o) => eprintln!(
                "load: {} ok, {} failed in {:.0} s; p50 {:.1} ms, p99 {:.1} ms",
                o.requests,
                o.errors,
                o.seconds,
                o.p50_us as f64 / 1000.0,
                o.p99_us as f64 / 1000.0
            ),
            Err(e) => {
                eprintln!("load: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

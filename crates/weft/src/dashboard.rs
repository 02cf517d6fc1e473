//! `weft dashboard [TOOL]`: Weft's dashboard, or an addon's UI, in the browser, as
//! `istioctl dashboard` opens them.

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DashboardArgs {
    /// Omitted: Weft's own dashboard.
    tool: Option<Tool>,
    /// Where the tool listens (default: where `weft up` and `weft demo` put it, or Istio's
    /// addon port).
    #[arg(long)]
    address: Option<SocketAddr>,
    /// Open a browser, as istioctl does; `--browser=false` only prints the address.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    browser: bool,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Tool {
    /// The Prometheus that `weft up --prometheus` and `weft demo` run (9090).
    Prometheus,
    /// The control plane's trace collector, Zipkin's API (9411).
    Zipkin,
    /// A Jaeger UI (Istio's addon: 16686).
    Jaeger,
    /// A Grafana (Istio's addon: 3000).
    Grafana,
    /// Kiali (20001): Weft's dashboard serves Kiali's port and graph API.
    Kiali,
}

impl Tool {
    fn default_address(tool: Option<Tool>) -> (SocketAddr, &'static str) {
        let (port, what) = match tool {
            None | Some(Tool::Kiali) => (20001, "a control plane with its dashboard (weft demo, weft up, weft control)"),
            Some(Tool::Prometheus) => (9090, "a mesh with its Prometheus (weft demo, or weft up --prometheus)"),
            Some(Tool::Zipkin) => (9411, "a mesh with its trace collector (weft demo, weft up, or weft control --zipkin)"),
            Some(Tool::Jaeger) => (16686, "a Jaeger UI (Istio's addon; the local mesh has none: its traces are on the dashboard)"),
            Some(Tool::Grafana) => (3000, "a Grafana (Istio's addon, with grafana/ and Istio's dashboards imported)"),
        };
        (([127, 0, 0, 1], port).into(), what)
    }
}

pub fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let (default, what) = Tool::default_address(args.tool);
    let address = args.address.unwrap_or(default);
    std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).with_context(|| {
        format!("nothing answers at {address}: is {what} running? hint: --address names another")
    })?;
    let url = format!("http://{address}");
    println!("{url}");
    if args.browser {
        let opened = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !opened.is_ok_and(|s| s.success()) {
            eprintln!("no browser could be opened (xdg-open): open {url} yourself");
        }
    }
    Ok(())
}

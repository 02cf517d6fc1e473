//! `weft dashboard [TOOL]`: Weft's dashboard, or an addon's UI, in the browser, as
//! `istioctl dashboard` opens them; on Kubernetes (`--kubeconfig`), through a port-forward
//! to the pod `weft install` runs it in.

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
    /// Reach it in this cluster: port-forward from --address (default 127.0.0.1 on the
    /// tool's port) to its pod in istio-system, until interrupted.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<std::path::PathBuf>,
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

impl Tool {
    /// The pod `weft install` runs it in (its labels in istio-system) and its port.
    fn in_cluster(tool: Option<Tool>) -> anyhow::Result<(&'static str, u16)> {
        match tool {
            None | Some(Tool::Kiali) => Ok(("app=istiod", weft_kube::manifest::DASHBOARD_PORT)),
            Some(Tool::Prometheus) => Ok(("app=prometheus", 9090)),
            Some(_) => anyhow::bail!(
                "weft install runs Weft's dashboard (with Kiali's API and the traces) and Prometheus; for another addon use kubectl port-forward"
            ),
        }
    }
}

pub fn run(args: DashboardArgs) -> anyhow::Result<()> {
    if let Some(kubeconfig) = &args.kubeconfig {
        return in_cluster(&args, kubeconfig);
    }
    let (default, what) = Tool::default_address(args.tool);
    let address = args.address.unwrap_or(default);
    std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).with_context(|| {
        format!("nothing answers at {address}: is {what} running? hint: --address names another")
    })?;
    open(&format!("http://{address}"), args.browser);
    Ok(())
}

/// Port-forwards to the tool's pod and serves until interrupted.
fn in_cluster(args: &DashboardArgs, kubeconfig: &std::path::Path) -> anyhow::Result<()> {
    let (selector, port) = Tool::in_cluster(args.tool)?;
    let local = args
        .address
        .unwrap_or_else(|| ([127, 0, 0, 1], port).into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = weft_kube::cluster::client(Some(kubeconfig)).await?;
        let namespace = weft_kube::manifest::NAMESPACE;
        let pod = weft_kube::port_forward::running_pod(&client, namespace, selector).await?;
        let (addr, forwarding) =
            weft_kube::port_forward::forward(client, namespace, pod.clone(), port, local).await?;
        eprintln!("forwarding {addr} to {namespace}/{pod}:{port} (Ctrl-C to stop)");
        open(&format!("http://{addr}"), args.browser);
        tokio::signal::ctrl_c().await?;
        forwarding.abort();
        Ok(())
    })
}

/// Prints the URL and opens a browser on it, as istioctl does.
fn open(url: &str, browser: bool) {
    println!("{url}");
    if browser {
        let opened = std::process::Command::new("xdg-open")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !opened.is_ok_and(|s| s.success()) {
            eprintln!("no browser could be opened (xdg-open): open {url} yourself");
        }
    }
}

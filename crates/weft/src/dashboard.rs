//! `weft dashboard TOOL`: an addon's UI in the browser, as `istioctl dashboard` opens it.

use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DashboardArgs {
    tool: Tool,
    /// Where the tool listens (`weft up --prometheus-address`).
    #[arg(long, default_value = "127.0.0.1:9090")]
    address: SocketAddr,
    /// Open a browser, as istioctl does; `--browser=false` only prints the address.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    browser: bool,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Tool {
    /// The Prometheus that `weft up --prometheus` and `weft demo` run.
    Prometheus,
}

pub fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let Tool::Prometheus = args.tool;
    std::net::TcpStream::connect_timeout(&args.address, Duration::from_secs(2)).with_context(
        || {
            format!(
                "nothing answers at {}: is a mesh running with its Prometheus (weft demo, or \
                 weft up --prometheus)? hint: --address names another",
                args.address
            )
        },
    )?;
    let url = format!("http://{}", args.address);
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

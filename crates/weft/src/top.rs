//! `weft stat` and `weft top`: the dashboard's services, workloads or routes as a terminal
//! table (success rate, requests per second, p50/p95/p99), as `linkerd viz stat`, `routes`
//! and `top` show them; `weft top` refreshes it until interrupted.

use crate::table::{self, Output};
use anyhow::Context;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(clap::Args)]
pub struct StatArgs {
    /// What to list.
    #[arg(value_enum, default_value = "workloads")]
    kind: Kind,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The dashboard, which the control plane serves (`weft control --dashboard`).
    #[arg(long, default_value = "127.0.0.1:20001")]
    dashboard: SocketAddr,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
    /// Refresh every this many seconds until interrupted (weft top: every 2 s).
    #[arg(long, value_name = "SECONDS")]
    watch: Option<u64>,
    /// Print once and exit (weft top's one-shot mode, for scripts).
    #[arg(long, conflicts_with = "watch")]
    once: bool,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Kind {
    Services,
    Workloads,
    /// VirtualService `http[]` entries and services' default routes, as callers met them.
    Routes,
}

/// `live`: `weft top` (refreshes unless `--once`); otherwise `weft stat` (once unless
/// `--watch`).
pub fn run(args: StatArgs, live: bool) -> anyhow::Result<()> {
    let every = match (args.watch, live && !args.once) {
        (Some(s), _) => Some(Duration::from_secs(s.max(1))),
        (None, true) => Some(Duration::from_secs(2)),
        (None, false) => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        loop {
            let rows = fetch(&args).await?;
            if every.is_some() && args.output == Output::Table {
                // Clear the terminal and go home, as top redraws.
                print!("\x1b[2J\x1b[H");
            }
            table::print(args.output, &rows, || render(&args, &rows))?;
            let Some(every) = every else {
                return Ok(());
            };
            tokio::time::sleep(every).await;
        }
    })
}

async fn fetch(args: &StatArgs) -> anyhow::Result<Vec<Value>> {
    let kind = match args.kind {
        Kind::Services => "services",
        Kind::Workloads => "workloads",
        Kind::Routes => "routes",
    };
    let mut path = format!("/api/weft/{kind}");
    if let Some(ns) = &args.namespace {
        path.push_str(&format!("?namespace={ns}"));
    }
    let base: http::Uri = format!("http://{}", args.dashboard).parse()?;
    let body = weft_dashboard::http_client::get(&base, &path)
        .await
        .with_context(|| {
            format!(
                "asking the dashboard at {}: is a control plane running with its dashboard (weft demo, weft up, weft control)? hint: --dashboard names another",
                args.dashboard
            )
        })?;
    serde_json::from_slice(&body).context("the dashboard's answer")
}

fn render(args: &StatArgs, rows: &[Value]) -> String {
    let number = |v: &Value, suffix: &str| match v.as_f64() {
        Some(n) => format!("{n:.2}{suffix}"),
        None => "-".into(),
    };
    let text = |r: &Value, key: &str| r[key].as_str().unwrap_or("-").to_string();
    let mut header = vec!["NAMESPACE"];
    header.extend(match args.kind {
        Kind::Services => &["NAME"][..],
        Kind::Workloads => &["NAME", "PODS"],
        Kind::Routes => &["VIRTUALSERVICE", "ROUTE", "HOST"],
    });
    header.extend([
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
    ]);
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut line = vec![text(r, "namespace")];
            match args.kind {
                Kind::Services => line.push(text(r, "name")),
                Kind::Workloads => {
                    let pods = r["pods"].as_array().map(Vec::as_slice).unwrap_or_default();
                    let ready = pods.iter().filter(|p| p["ready"] == true).count();
                    line.extend([text(r, "name"), format!("{ready}/{}", pods.len())]);
                }
                Kind::Routes => {
                    line.extend(["virtualService", "route", "host"].map(|k| text(r, k)))
                }
            }
            line.push(number(&r["successRate"], "%"));
            line.push(number(&r["rps"], ""));
            for q in ["p50", "p95", "p99"] {
                line.push(number(&r[q], "ms"));
            }
            line
        })
        .collect();
    table::render(&header, &lines)
}

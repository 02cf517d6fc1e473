//! `weft proxy-status` and `weft version`.

use super::{status_error, Target};
use crate::table::{self, Output};
use serde::Serialize;
use std::collections::BTreeMap;
use weft_discovery::admin::{ProxyStatusRequest, VersionRequest};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Only this proxy (`name` or `name.namespace`).
    proxy: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(clap::Args)]
pub struct VersionArgs {
    /// Ask the control plane for its version and its proxies' (`--remote=false`: only the
    /// client's).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    remote: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    name: String,
    address: String,
    /// Whether its workload is an endpoint (it presented the join token).
    registered: bool,
    status: &'static str,
    sent_version: String,
    acked_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    rejected_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    rejection: String,
    resources: u32,
    proxy_version: String,
    connected_seconds: u64,
}

pub async fn proxy_status(target: &Target, args: StatusArgs) -> anyhow::Result<()> {
    let mut client = target.connect().await?;
    let response = client
        .proxy_status(ProxyStatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    for p in &response.config_problems {
        eprintln!("warning: the control plane's config: {p}");
    }
    let proxies = response.proxies;
    let rows: Vec<Row> = proxies
        .iter()
        .map(|p| {
            let id = p.identity.clone().unwrap_or_default();
            Row {
                name: format!("{}.{}", id.name, id.namespace),
                address: id.address.clone(),
                registered: p.registered,
                status: p.sync_state(),
                sent_version: p.sent_version.clone(),
                acked_version: p.acked_version.clone(),
                rejected_version: p.nacked_version.clone(),
                rejection: p.nack_reason.clone(),
                resources: p.resources,
                proxy_version: id.proxy_version.clone(),
                connected_seconds: p.connected_seconds,
            }
        })
        .filter(|r| {
            args.proxy
                .as_ref()
                .is_none_or(|want| r.name == *want || r.name.split('.').next() == Some(want))
        })
        .collect();
    if rows.is_empty() && args.proxy.is_some() {
        anyhow::bail!(
            "no proxy {:?} is connected; `weft proxy-status` lists the connected ones",
            args.proxy.unwrap_or_default()
        );
    }
    table::print(args.output, &rows, || {
        if rows.is_empty() {
            return "No proxies are connected: start one with `weft proxy --control-plane ADDR`."
                .into();
        }
        let short = |v: &str| v.chars().take(12).collect::<String>();
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    if r.registered || r.address.is_empty() {
                        r.address.clone()
                    } else {
                        format!("{} (no join token: not an endpoint)", r.address)
                    },
                    r.status.to_string(),
                    short(&r.acked_version),
                    r.resources.to_string(),
                    r.proxy_version.clone(),
                    if r.rejection.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "{} rejected: {}",
                            short(&r.rejected_version),
                            first_line(&r.rejection)
                        )
                    },
                ]
            })
            .collect();
        table::render(
            &[
                "NAME",
                "ADDRESS",
                "CONFIG",
                "VERSION",
                "RESOURCES",
                "PROXY",
                "LAST REJECTION",
            ],
            &body,
        )
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane_version: Option<String>,
    /// Proxy build → connected proxies.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_plane_versions: Option<BTreeMap<String, u32>>,
}

pub async fn version(target: &Target, args: VersionArgs) -> anyhow::Result<()> {
    let mut v = Versions {
        client_version: env!("CARGO_PKG_VERSION").to_string(),
        control_plane_version: None,
        data_plane_versions: None,
    };
    let mut unreachable = None;
    if args.remote {
        match target.connect().await {
            Ok(mut client) => {
                let r = client
                    .version(VersionRequest {})
                    .await
                    .map_err(status_error)?
                    .into_inner();
                v.control_plane_version = Some(r.control_plane);
                v.data_plane_versions = Some(r.proxies.into_iter().collect());
            }
            Err(e) => unreachable = Some(e),
        }
    }
    table::print(args.output, &v, || {
        let mut lines = vec![format!("client version: {}", v.client_version)];
        if let Some(cp) = &v.control_plane_version {
            lines.push(format!("control plane version: {cp}"));
        }
        if let Some(dp) = &v.data_plane_versions {
            let total: u32 = dp.values().sum();
            let builds: Vec<String> = dp
                .iter()
                .map(|(b, n)| format!("{b} ({n} proxies)"))
                .collect();
            lines.push(if total == 0 {
                "data plane version: none (0 proxies)".into()
            } else {
                format!("data plane version: {}", builds.join(", "))
            });
        }
        lines.join("\n")
    })?;
    if let Some(e) = unreachable {
        eprintln!("warning: {e:#}");
    }
    Ok(())
}

//! `weft analyze`: istioctl analyze for Weft. Reads config files, runs the analyzers of
//! `weft_api::analyze`, and prints one message a line, as istioctl does; the exit status is
//! non-zero when any message in the analyzed namespaces is an Error.

use crate::client::{decode_all, status_error, Target};
use anyhow::bail;
use std::path::PathBuf;
use weft_api::analyze::{self, Format, Input, Level};
use weft_discovery::admin::GetRequest;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Files or directories of .yaml/.yml/.json to analyze (repeat, or separate with commas).
    #[arg(short = 'f', long = "filename", value_delimiter = ',', num_args = 1..)]
    filenames: Vec<PathBuf>,
    /// More files or directories, as istioctl takes them.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Report on every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// The namespace to report on. Documents that name none are in `default`.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Output format.
    #[arg(short = 'o', long, default_value = "log", value_parser = ["log", "json", "yaml"])]
    output: String,
}

/// Analyzes the files named, or without any, the control plane's live config.
pub fn run(args: AnalyzeArgs, control_plane: &Target) -> anyhow::Result<()> {
    let paths: Vec<PathBuf> = args.filenames.into_iter().chain(args.files).collect();
    let target = if args.all_namespaces {
        "all namespaces".to_string()
    } else {
        format!("namespace: {}", args.namespace)
    };
    let (input, problems) = if paths.is_empty() {
        crate::client_run(live_config(control_plane))?
    } else {
        (Input::load(&paths)?, Vec::new())
    };
    // Files the control plane cannot load: the live config lacks what they say.
    for p in &problems {
        println!("Error [IST0106] Schema validation error: {p}");
    }
    let messages: Vec<_> = analyze::analyze(&input)
        .into_iter()
        .filter(|m| args.all_namespaces || m.namespace().is_none_or(|ns| ns == args.namespace))
        .collect();
    let format = match args.output.as_str() {
        "json" => Format::Json,
        "yaml" => Format::Yaml,
        _ => Format::Log,
    };
    if !messages.is_empty() || format != Format::Log {
        println!("{}", analyze::render(&messages, format).trim_end());
    }
    if messages.is_empty() && problems.is_empty() {
        eprintln!("\u{2714} No validation issues found when analyzing {target}.");
    }
    if !problems.is_empty() || messages.iter().any(|m| m.level() == Level::Error) {
        bail!(
            "Analyzers found issues when analyzing {target}.\nSee https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions."
        );
    }
    Ok(())
}

/// Everything the control plane holds, including the workloads its proxies announced, and
/// the files of its config directory it cannot load.
async fn live_config(target: &Target) -> anyhow::Result<(Input, Vec<String>)> {
    let mut client = target.connect().await.map_err(|e| {
        e.context("weft analyze without -f reads the live config from the control plane")
    })?;
    let got = client
        .get(GetRequest::default())
        .await
        .map_err(status_error)?
        .into_inner();
    let input = Input {
        resources: decode_all(&got.resources)?,
        ..Default::default()
    };
    Ok((input, got.config_problems))
}

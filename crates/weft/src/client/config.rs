//! `weft apply`, `weft get`, `weft delete`.

use super::{as_values, decode_all, parse_kind, status_error, Target};
use crate::table::{self, Output};
use anyhow::{bail, Context};
use std::io::Read;
use std::path::{Path, PathBuf};
use weft_api::{Kind, Resource, Spec};
use weft_discovery::admin::{ApplyRequest, DeleteRequest, GetRequest};
use weft_discovery::wire::Key;

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// A file, a directory of .yaml/.yml/.json files, or `-` for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    filename: PathBuf,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// virtualservices (vs), destinationrules (dr), serviceentries (se), workloadentries
    /// (we), gateways (gw), sidecars, services (svc), or `all`.
    kind: String,
    name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// Delete the objects a file or directory defines.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
    filename: Option<PathBuf>,
    kind: Option<String>,
    name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
}

/// The documents to send, each with the name errors should give it.
fn read_documents(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(vec![("-".into(), text)]);
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))
            .map(|t| (p.display().to_string(), t))
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| weft_api::load::is_config_file(p))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{} has no .yaml, .yml or .json files", path.display());
        }
        return files.iter().map(|p| read(p)).collect();
    }
    Ok(vec![read(path)?])
}

pub async fn apply(target: &Target, args: ApplyArgs) -> anyhow::Result<()> {
    apply_documents(target, read_documents(&args.filename)?).await
}

/// Applies `(source, documents)` pairs, printing what each did as kubectl does.
pub async fn apply_documents(
    target: &Target,
    sources: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let mut client = target.connect().await?;
    for (source, documents) in sources {
        let response = client
            .apply(ApplyRequest { source, documents })
            .await
            .map_err(status_error)?
            .into_inner();
        for m in &response.messages {
            eprintln!("{m}");
        }
        for a in response.applied {
            let key = a.key.unwrap_or_default();
            println!("{}/{} {}", qualified(&key.kind), key.name, a.action);
        }
    }
    Ok(())
}

pub async fn get(target: &Target, args: GetArgs) -> anyhow::Result<()> {
    let kind = match args.kind.as_str() {
        "all" => None,
        k => Some(parse_kind(k).map_err(anyhow::Error::msg)?),
    };
    let mut client = target.connect().await?;
    let resources = client
        .get(GetRequest {
            kind: kind.map(|k| k.name().to_string()).unwrap_or_default(),
            name: args.name.clone().unwrap_or_default(),
            namespace: if args.all_namespaces {
                String::new()
            } else {
                args.namespace.clone()
            },
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .resources;
    let values = as_values(&resources);
    let data: serde_json::Value = match (&args.name, values.as_slice()) {
        (Some(_), [one]) => one.clone(),
        _ => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values}),
    };
    let decoded = decode_all(&resources)?;
    table::print(args.output, &data, || {
        if decoded.is_empty() {
            let place = if args.all_namespaces {
                "any namespace".to_string()
            } else {
                format!("{} namespace", args.namespace)
            };
            return format!("No resources found in {place}.");
        }
        tables(&decoded, args.all_namespaces)
    })
}

/// One table per kind, with the columns Istio's CRDs print.
fn tables(resources: &[Resource], all_namespaces: bool) -> String {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let of_kind: Vec<&Resource> = resources.iter().filter(|r| r.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let extra: &[&str] = match kind {
            Kind::VirtualService => &["GATEWAYS", "HOSTS"],
            Kind::DestinationRule => &["HOST"],
            Kind::ServiceEntry => &["HOSTS", "LOCATION", "RESOLUTION"],
            Kind::WorkloadEntry => &["ADDRESS"],
            Kind::Service => &["TYPE", "CLUSTER-IP", "PORT(S)"],
            Kind::PeerAuthentication => &["MODE"],
            Kind::AuthorizationPolicy => &["ACTION"],
            Kind::Secret => &["TYPE", "DATA"],
            Kind::Gateway
            | Kind::Sidecar
            | Kind::Telemetry
            | Kind::RequestAuthentication
            | Kind::ConfigMap => &[],
        };
        let mut header = Vec::new();
        if all_namespaces {
            header.push("NAMESPACE");
        }
        header.push("NAME");
        header.extend_from_slice(extra);
        header.push("RESOURCE VERSION");
        let rows: Vec<Vec<String>> = of_kind
            .iter()
            .map(|r| {
                let mut row = Vec::new();
                if all_namespaces {
                    row.push(r.namespace().to_string());
                }
                row.push(r.name().to_string());
                row.extend(columns(r));
                row.push(r.metadata.resource_version.clone().unwrap_or_default());
                row
            })
            .collect();
        out.push(table::render(&header, &rows));
    }
    out.join("\n\n")
}

fn columns(r: &Resource) -> Vec<String> {
    let list = |v: &[String]| format!("[{}]", v.join(","));
    let debug = |v: Option<String>| v.unwrap_or_else(|| "<none>".into());
    match &r.spec {
        Spec::VirtualService(vs) => vec![list(&vs.gateways), list(&vs.hosts)],
        Spec::DestinationRule(dr) => vec![dr.host.clone()],
        Spec::ServiceEntry(se) => vec![
            list(&se.hosts),
            debug(se.location.map(|l| format!("{l:?}"))),
            debug(se.resolution.map(|l| format!("{l:?}"))),
        ],
        Spec::WorkloadEntry(we) => vec![we.address.clone()],
        Spec::Service(s) => vec![
            s.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
            debug(s.cluster_ip.clone()),
            s.ports
                .iter()
                .map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")))
                .collect::<Vec<_>>()
                .join(","),
        ],
        // The CRD's printer column: `.spec.mtls.mode`, blank when unset.
        Spec::PeerAuthentication(pa) => {
            vec![pa
                .mtls
                .as_ref()
                .and_then(|m| m.mode.clone())
                .unwrap_or_default()]
        }
        Spec::AuthorizationPolicy(ap) => vec![ap.action.clone().unwrap_or_default()],
        Spec::Secret(s) => vec![s.type_.clone(), s.data.len().to_string()],
        Spec::Gateway(_)
        | Spec::Sidecar(_)
        | Spec::Telemetry(_)
        | Spec::RequestAuthentication(_)
        | Spec::MeshConfig(_) => Vec::new(),
    }
}

pub async fn delete(target: &Target, args: DeleteArgs) -> anyhow::Result<()> {
    let keys: Vec<Key> = match (&args.filename, &args.kind, &args.name) {
        (Some(path), _, _) => {
            let loaded = weft_api::load_path(path)?;
            if loaded.has_errors() {
                let errors: Vec<String> = loaded.errors().map(ToString::to_string).collect();
                bail!(
                    "{}\nfix the file, or delete by KIND NAME",
                    errors.join("\n")
                );
            }
            loaded.resources.iter().map(Key::of).collect()
        }
        (None, Some(kind), Some(name)) => vec![Key {
            kind: parse_kind(kind).map_err(anyhow::Error::msg)?,
            namespace: args.namespace.clone(),
            name: name.clone(),
        }],
        _ => bail!(
            "say what to delete: weft delete -f FILE, or weft delete KIND NAME [-n NAMESPACE]"
        ),
    };
    let mut client = target.connect().await?;
    let deleted = client
        .delete(DeleteRequest {
            keys: keys.iter().map(Key::to_wire).collect(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .deleted;
    for k in deleted {
        println!("{} \"{}\" deleted", qualified(&k.kind), k.name);
    }
    Ok(())
}

/// `virtualservice.networking.istio.io`, `service`: how kubectl names a kind in messages.
fn qualified(kind: &str) -> String {
    match kind {
        "Service" => "service".into(),
        "ConfigMap" => "configmap".into(),
        "Secret" => "secret".into(),
        "Telemetry" => "telemetry.telemetry.istio.io".into(),
        "PeerAuthentication" => "peerauthentication.security.istio.io".into(),
        "AuthorizationPolicy" => "authorizationpolicy.security.istio.io".into(),
        "RequestAuthentication" => "requestauthentication.security.istio.io".into(),
        k => format!("{}.networking.istio.io", k.to_ascii_lowercase()),
    }
}

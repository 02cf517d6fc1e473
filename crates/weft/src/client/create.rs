//! `weft create secret`, as kubectl makes the Secrets a Gateway's `credentialName` names:
//! `tls NAME --cert --key` (type `kubernetes.io/tls`) and `generic NAME --from-file
//! [KEY=]PATH --from-literal KEY=VALUE`, which Istio's "Secure Gateways" task uses for
//! MUTUAL (`tls.crt`, `tls.key`, `ca.crt`).

use super::config::apply_documents;
use super::{status_error, Target};
use anyhow::{bail, Context};
use base64::Engine;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weft_discovery::admin::GetRequest;

#[derive(clap::Subcommand)]
pub enum CreateCommand {
    /// A Secret, as kubectl create secret makes one.
    #[command(subcommand)]
    Secret(SecretKind),
}

#[derive(clap::Subcommand)]
pub enum SecretKind {
    /// A kubernetes.io/tls Secret from a certificate chain and its key (PEM files).
    Tls {
        name: String,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// An Opaque Secret from files (the key is the file's name unless given as KEY=PATH)
    /// and literal values.
    Generic {
        name: String,
        #[arg(long = "from-file", value_name = "[KEY=]PATH")]
        from_file: Vec<String>,
        #[arg(long = "from-literal", value_name = "KEY=VALUE")]
        from_literal: Vec<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

pub async fn run(target: &Target, command: CreateCommand) -> anyhow::Result<()> {
    let CreateCommand::Secret(kind) = command;
    let (name, namespace, type_, data) = match kind {
        SecretKind::Tls {
            name,
            cert,
            key,
            namespace,
        } => {
            let data = BTreeMap::from([
                ("tls.crt".to_string(), read(&cert)?),
                ("tls.key".to_string(), read(&key)?),
            ]);
            (name, namespace, weft_api::types::secret::TLS_TYPE, data)
        }
        SecretKind::Generic {
            name,
            from_file,
            from_literal,
            namespace,
        } => {
            let mut data = BTreeMap::new();
            for spec in from_file {
                let (key, path) = match spec.split_once('=') {
                    Some((key, path)) => (key.to_string(), PathBuf::from(path)),
                    None => {
                        let path = PathBuf::from(&spec);
                        let key = path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .with_context(|| format!("--from-file {spec}: no file name"))?;
                        (key, path)
                    }
                };
                data.insert(key, read(&path)?);
            }
            for spec in from_literal {
                let Some((key, value)) = spec.split_once('=') else {
                    bail!("--from-literal {spec:?}: write KEY=VALUE");
                };
                data.insert(key.to_string(), value.as_bytes().to_vec());
            }
            if data.is_empty() {
                bail!("a generic Secret needs --from-file or --from-literal");
            }
            (name, namespace, "Opaque", data)
        }
    };
    let mut client = target.connect().await?;
    let existing = client
        .get(GetRequest {
            kind: weft_api::Kind::Secret.name().into(),
            name: name.clone(),
            namespace: namespace.clone(),
        })
        .await
        .map(|r| !r.into_inner().resources.is_empty())
        .or_else(|s| match s.code() {
            tonic::Code::NotFound => Ok(false),
            _ => Err(status_error(s)),
        })?;
    if existing {
        bail!("secrets \"{name}\" already exists in namespace {namespace}: weft delete secret {name} -n {namespace} first, or weft apply -f a changed Secret");
    }
    let data: BTreeMap<String, String> = data
        .into_iter()
        .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
        .collect();
    let document = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": type_,
        "data": data,
    });
    apply_documents(
        target,
        vec![("weft create secret".into(), document.to_string())],
    )
    .await
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

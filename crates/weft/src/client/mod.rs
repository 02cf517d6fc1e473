//! The CLI verbs that talk to `weft control`: apply, get, delete, proxy-status,
//! proxy-config, describe, version.

pub mod config;
pub mod create;
pub mod describe;
pub mod proxy_config;
pub mod status;

use anyhow::Context;
use std::path::PathBuf;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use weft_api::Kind;
use weft_discovery::admin::admin_client::AdminClient;
use weft_discovery::credentials::{self, Bearer, Token};
use weft_discovery::discovery::Resource as WireResource;
use weft_discovery::wire;

/// Where the control plane is: `--control-plane`, `WEFT_CONTROL_PLANE`, or the local one.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The control plane's gRPC address.
    #[arg(
        long,
        global = true,
        env = "WEFT_CONTROL_PLANE",
        default_value = "http://127.0.0.1:15010"
    )]
    pub control_plane: String,
    /// The control plane's admin token. Default: the one `weft control` or `weft up`
    /// published for this address under $WEFT_HOME/credentials (~/.weft).
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the admin token (the control plane's `.weft/admin.token`).
    #[arg(long, global = true, env = "WEFT_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

/// The admin API, every call carrying the admin token.
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

impl Target {
    /// The admin token: given, in a given file, or published for this address.
    fn admin_token(&self) -> anyhow::Result<Option<Token>> {
        if let Some(text) = &self.token {
            return Token::parse(text)
                .map(Some)
                .context("--token / WEFT_TOKEN is empty or not a token");
        }
        if let Some(file) = &self.token_file {
            return Ok(Some(
                Token::read(file).context("--token-file / WEFT_TOKEN_FILE")?,
            ));
        }
        Ok(credentials::published_token(&self.control_plane))
    }

    pub async fn connect(&self) -> anyhow::Result<Admin> {
        let endpoint = if self.control_plane.contains("://") {
            self.control_plane.clone()
        } else {
            format!("http://{}", self.control_plane)
        };
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .with_context(|| format!("{endpoint:?} is not a control plane address (use http://HOST:15010)"))?
            .connect_timeout(std::time::Duration::from_secs(3))
            .connect()
            .await
            .with_context(|| {
                format!("cannot reach the control plane at {endpoint}: start it with `weft control`, or point --control-plane / WEFT_CONTROL_PLANE at it")
            })?;
        let bearer = Bearer::new(self.admin_token()?.as_ref());
        Ok(AdminClient::with_interceptor(channel, bearer))
    }
}

/// A gRPC error as the control plane worded it, without tonic's framing.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// `virtualservices`, `vs`, `VirtualService`… as kubectl accepts resource names.
pub fn parse_kind(text: &str) -> Result<Kind, String> {
    let t = text.to_ascii_lowercase();
    let t = t.split('.').next().unwrap_or_default();
    let kind = match t {
        "virtualservice" | "virtualservices" | "vs" => Kind::VirtualService,
        "destinationrule" | "destinationrules" | "dr" => Kind::DestinationRule,
        "serviceentry" | "serviceentries" | "se" => Kind::ServiceEntry,
        "workloadentry" | "workloadentries" | "we" => Kind::WorkloadEntry,
        "gateway" | "gateways" | "gw" => Kind::Gateway,
        "sidecar" | "sidecars" => Kind::Sidecar,
        "service" | "services" | "svc" => Kind::Service,
        "telemetry" | "telemetries" => Kind::Telemetry,
        "peerauthentication" | "peerauthentications" | "pa" => Kind::PeerAuthentication,
        "authorizationpolicy" | "authorizationpolicies" | "ap" => Kind::AuthorizationPolicy,
        "requestauthentication" | "requestauthentications" | "ra" => Kind::RequestAuthentication,
        "configmap" | "configmaps" | "cm" => Kind::ConfigMap,
        "secret" | "secrets" => Kind::Secret,
        _ => {
            return Err(format!(
                "unknown kind {text:?}: use one of virtualservices (vs), destinationrules (dr), serviceentries (se), workloadentries (we), gateways (gw), sidecars, services (svc), telemetries, peerauthentications (pa), authorizationpolicies (ap), requestauthentications (ra), configmaps (cm: the mesh config), secrets (a Gateway's credentialName)"
            ))
        }
    };
    Ok(kind)
}

/// Decodes objects from the control plane.
pub fn decode_all(resources: &[WireResource]) -> anyhow::Result<Vec<weft_api::Resource>> {
    resources
        .iter()
        .map(|r| wire::decode(r).map_err(anyhow::Error::msg))
        .collect()
}

/// The objects as JSON values, for `-o json|yaml`.
pub fn as_values(resources: &[WireResource]) -> Vec<serde_json::Value> {
    resources
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.json).ok())
        .collect()
}

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
use weft_discovery::credentials::{self, AdminCredential, Bearer, Token};
use weft_discovery::discovery::Resource as WireResource;
use weft_discovery::wire;

/// Where the control plane is: `--control-plane`, `WEFT_CONTROL_PLANE`, or the local one.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The control plane: `HOST:PORT` or `https://HOST:PORT` is its TLS port (15012),
    /// where the CLI shows the admin identity's certificate; `http://HOST:PORT` is the
    /// plaintext port a control plane serves only when asked (--grpc), with the admin token.
    #[arg(
        long,
        global = true,
        env = "WEFT_CONTROL_PLANE",
        default_value = "127.0.0.1:15012"
    )]
    pub control_plane: String,
    /// The control plane's admin token. Default: the one `weft control` or `weft up`
    /// published for this address under $WEFT_HOME/credentials (~/.weft).
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the admin token (the control plane's `.weft/admin.token`).
    #[arg(long, global = true, env = "WEFT_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The admin identity's credential for an https:// control plane (the control plane's
    /// `.weft/admin.pem`). Default: the one published for this address under
    /// $WEFT_HOME/credentials.
    #[arg(long, global = true, env = "WEFT_ADMIN_CERT", value_name = "FILE")]
    pub admin_cert: Option<PathBuf>,
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

    /// The admin identity's credential for an https:// control plane: given, or published
    /// for this address.
    fn admin_credential(&self) -> anyhow::Result<AdminCredential> {
        if let Some(file) = &self.admin_cert {
            return AdminCredential::read(file).context("--admin-cert / WEFT_ADMIN_CERT");
        }
        let published = credentials::published_admin_path(&self.control_plane);
        match published.as_deref().map(AdminCredential::read) {
            Some(Ok(credential)) => Ok(credential),
            _ => anyhow::bail!(
                "no admin credential for {}: a CLI of the control plane's user finds it under $WEFT_HOME/credentials (default ~/.weft), where weft control and weft up publish it; elsewhere pass --admin-cert with a copy of the control plane's .weft/admin.pem",
                self.control_plane
            ),
        }
    }

    pub async fn connect(&self) -> anyhow::Result<Admin> {
        let endpoint = if self.control_plane.contains("://") {
            self.control_plane.clone()
        } else {
            format!("https://{}", self.control_plane)
        };
        let mut endpoint_config = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .with_context(|| {
                format!("{endpoint:?} is not a control plane address (use https://HOST:15012)")
            })?;
        if endpoint.starts_with("https://") {
            let credential = match self.admin_credential() {
                Ok(credential) => credential,
                // Nothing there is the likelier mistake: say that first.
                Err(missing) => return Err(unreachable(&endpoint).await.unwrap_or(missing)),
            };
            let root = credential
                .root_pem()
                .context("the admin credential holds no root certificate")?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(root))
                .identity(tonic::transport::Identity::from_pem(
                    credential.pem(),
                    credential.pem(),
                ))
                .domain_name(weft_discovery::CONTROL_PLANE_SAN);
            endpoint_config = endpoint_config
                .tls_config(tls)
                .context("the admin credential's TLS settings")?;
        }
        let channel = endpoint_config
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .with_context(|| cannot_reach(&endpoint))?;
        let bearer = Bearer::new(self.admin_token()?.as_ref());
        Ok(AdminClient::with_interceptor(channel, bearer))
    }
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

fn cannot_reach(endpoint: &str) -> String {
    format!("cannot reach the control plane at {endpoint}: start it with `weft control`, or point --control-plane / WEFT_CONTROL_PLANE at it (http://HOST:PORT for one serving plaintext --grpc)")
}

/// Why nothing answers at `endpoint`, if nothing does.
async fn unreachable(endpoint: &str) -> Option<anyhow::Error> {
    let addr = endpoint.split_once("://").map_or(endpoint, |(_, a)| a);
    let addr = addr.trim_end_matches('/');
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(anyhow::Error::new(e).context(cannot_reach(endpoint))),
        Err(_) => Some(anyhow::anyhow!(
            "{}: no answer within {CONNECT_TIMEOUT:?}",
            cannot_reach(endpoint)
        )),
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

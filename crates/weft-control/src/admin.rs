//! The admin API the `weft` CLI calls: apply, get, delete, proxy status and config,
//! versions.

use crate::config::{ConfigError, ConfigState};
use crate::StartError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use weft_discovery::admin::admin_server::Admin;
use weft_discovery::admin::*;
use weft_discovery::credentials::AdminCredential;
use weft_discovery::credentials::{Token, AUTHORIZATION};
use weft_discovery::wire::{self, Key};
use weft_security::ca::{admin_uri, Ca, ADMIN_TTL};
use weft_security::cert::chain_der;
use weft_security::cert::CertInfo;

pub struct AdminService {
    pub state: Arc<ConfigState>,
    /// The mesh root, which `weft proxy-config secret` lists beside a proxy's certificate.
    pub root_cert: String,
}

/// Lets through only calls from the admin identity's certificate (on the TLS port, whose
/// handshake checked it chains to the mesh root) or carrying the admin token.
#[derive(Clone)]
pub struct Authenticate {
    pub token: Token,
    pub kept_in: PathBuf,
    /// `spiffe://TRUST-DOMAIN/weft/admin`.
    pub admin_uri: String,
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let certified = req
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| CertInfo::of_der(c).ok()));
        if let Some(cert) = &certified {
            if cert.uri_sans == [self.admin_uri.as_str()] {
                return Ok(req);
            }
        }
        match presented {
            Some(header) if self.token.authorizes(header) => Ok(req),
            None if certified.is_some() => Err(Status::permission_denied(format!(
                "the certificate presented is for {}, not the admin identity {}: the CLI's is the control plane's .weft/admin.pem (published under $WEFT_HOME/credentials for this user's CLI; elsewhere pass --admin-cert FILE)",
                certified.map_or_else(String::new, |c| c.uri_sans.join(", ")),
                self.admin_uri
            ))),
            Some(_) => Err(Status::unauthenticated(format!(
                "the admin token presented is not this control plane's: its token is in {} on the control plane's machine (readable by its user only); pass it with --token-file or WEFT_TOKEN",
                self.kept_in.display()
            ))),
            None => Err(Status::unauthenticated(format!(
                "the control plane's admin API needs its admin token: it is in {} on the control plane's machine (readable by its user only). A CLI of the same user finds it through $WEFT_HOME/credentials (default ~/.weft), where weft control and weft up publish it; elsewhere pass --token-file FILE, or --token / WEFT_TOKEN",
                self.kept_in.display()
            ))),
        }
    }
}

/// The admin identity's credential kept in `path`, issued afresh when there is none, when
/// less than half its life is left, or when it no longer chains to `ca`'s root.
pub fn admin_credential(ca: &Ca, path: &Path) -> Result<AdminCredential, StartError> {
    let uri = admin_uri(ca.trust_domain());
    let usable = |c: &AdminCredential| {
        let leaf = chain_der(c.pem())
            .ok()
            .and_then(|chain| chain.first().and_then(|d| CertInfo::of_der(d).ok()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        c.root_pem() == Some(ca.root_pem().trim_end())
            && leaf.is_some_and(|l| {
                l.uri_sans == [uri.as_str()] && l.not_after - now > ADMIN_TTL.as_secs() as i64 / 2
            })
    };
    if let Ok(kept) = AdminCredential::read(path) {
        if usable(&kept) {
            return Ok(kept);
        }
    }
    let (chain, key) = ca.admin_client(ADMIN_TTL)?;
    let credential = AdminCredential::new(&chain, &key);
    credential.write(path)?;
    tracing::info!(file = %path.display(), "issued the admin identity's certificate");
    Ok(credential)
}

/// Keeps the admin credential usable while the control plane runs: every `every`, issues it
/// afresh once less than half its life is left, and publishes the new one where the old one
/// was published.
pub async fn keep_admin_credential(
    ca: Arc<Ca>,
    path: PathBuf,
    every: std::time::Duration,
    published: Option<std::net::SocketAddr>,
    held: Arc<parking_lot::Mutex<Option<AdminCredential>>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now, and the credential was just checked at start.
    tick.tick().await;
    loop {
        tick.tick().await;
        let renewed = match admin_credential(&ca, &path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot renew the admin identity's certificate: {e}");
                continue;
            }
        };
        let mut held = held.lock();
        if held.as_ref().map(AdminCredential::pem) == Some(renewed.pem()) {
            continue;
        }
        if let Some(addr) = published {
            if let Err(e) = weft_discovery::credentials::publish_admin(addr, &renewed) {
                tracing::warn!("cannot publish the renewed admin credential: {e}");
            }
        }
        *held = Some(renewed);
    }
}

impl From<ConfigError> for Status {
    fn from(e: ConfigError) -> Status {
        match &e {
            ConfigError::Invalid(_) => Status::invalid_argument(e.to_string()),
            ConfigError::Conflict { .. } => Status::aborted(e.to_string()),
            ConfigError::NotFound(_) => Status::not_found(e.to_string()),
            ConfigError::Store(_) => Status::internal(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let req = req.into_inner();
        let (applied, messages) = self.state.apply(&req.source, &req.documents).await?;
        Ok(Response::new(ApplyResponse {
            applied: applied
                .into_iter()
                .map(|a| Applied {
                    key: Some(a.key.to_wire()),
                    action: a.action.to_string(),
                    resource_version: a.resource_version,
                })
                .collect(),
            messages,
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = req.into_inner();
        let mesh = self.state.mesh();
        // Announced workloads too: they are WorkloadEntries like any other, as in Istio.
        let mut found: Vec<(&Key, _)> = mesh
            .objects()
            .iter()
            .filter(|(k, _)| req.kind.is_empty() || k.kind.name() == req.kind)
            .filter(|(k, _)| req.name.is_empty() || k.name == req.name)
            .filter(|(k, _)| req.namespace.is_empty() || k.namespace == req.namespace)
            .collect();
        if found.is_empty() && !req.name.is_empty() {
            return Err(Status::not_found(format!(
                "{} {}/{} not found (weft get {} -A lists what there is)",
                req.kind, req.namespace, req.name, req.kind
            )));
        }
        found.sort_by(|a, b| a.0.cmp(b.0));
        let resources = found
            .into_iter()
            .map(|(k, o)| wire::encode(k, o.json.clone()))
            .collect();
        drop(mesh);
        Ok(Response::new(GetResponse {
            resources,
            config_problems: self.state.problems().1,
        }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let keys = req
            .into_inner()
            .keys
            .iter()
            .map(Key::from_wire)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        let deleted = self.state.delete(keys).await?;
        Ok(Response::new(DeleteResponse {
            deleted: deleted.iter().map(Key::to_wire).collect(),
        }))
    }

    async fn proxy_status(
        &self,
        _: Request<ProxyStatusRequest>,
    ) -> Result<Response<ProxyStatusResponse>, Status> {
        Ok(Response::new(ProxyStatusResponse {
            proxies: self.state.mesh().proxy_statuses(),
            config_problems: self.state.problems().1,
        }))
    }

    async fn proxy_config(
        &self,
        req: Request<ProxyConfigRequest>,
    ) -> Result<Response<ProxyConfigResponse>, Status> {
        let name = req.into_inner().proxy;
        let mesh = self.state.mesh();
        let (_, p) = mesh.find_proxy(&name).ok_or_else(|| {
            Status::not_found(format!(
                "no proxy {name:?} is connected (weft proxy-status lists them as NAME.NAMESPACE)"
            ))
        })?;
        let resources = mesh
            .view_objects(&p.view)
            .into_iter()
            .map(|o| wire::encode(&Key::of(&o.resource), o.json.clone()))
            .collect();
        Ok(Response::new(ProxyConfigResponse {
            identity: Some(p.hello.clone()),
            version: p.acked.clone(),
            resources,
            certificate_chain: p.certificate_chain.clone(),
            root_cert: self.root_cert.clone(),
        }))
    }

    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let mut proxies: HashMap<String, u32> = HashMap::new();
        for (_, p) in self.state.mesh().proxies() {
            *proxies.entry(p.hello.proxy_version.clone()).or_default() += 1;
        }
        Ok(Response::new(VersionResponse {
            control_plane: env!("CARGO_PKG_VERSION").to_string(),
            proxies,
        }))
    }
}

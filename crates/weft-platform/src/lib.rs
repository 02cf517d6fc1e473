//! The local platform behind `weft up`: what Kubernetes and istio-init do for a pod, on one
//! Linux machine. A mesh file declares Kubernetes `Service`s, Istio config and Weft
//! `Workload`s; the platform plans pods and service addresses from it and runs them, each
//! pod in its own network namespace on a bridge, with istio-init's iptables rules and a
//! supervised sidecar and app.
#![forbid(unsafe_code)]

pub mod addons;
pub mod forward;
pub mod iptables;
pub mod mesh;
pub mod plan;
pub mod pod;
pub mod public_ca;
pub mod sandbox;
pub mod secret_volumes;
pub mod state;
pub mod stop;
pub mod supervise;
pub mod sys;
pub mod up;

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Mesh(#[from] mesh::MeshError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Sys(#[from] sys::SysError),
    #[error(transparent)]
    Pod(#[from] pod::PodError),
    #[error(transparent)]
    Control(#[from] weft_control::StartError),
    #[error(transparent)]
    Dashboard(#[from] weft_dashboard::DashboardError),
    #[error(transparent)]
    PublicCa(#[from] public_ca::PublicCaError),
    #[error("the mesh file's config was refused: {0}")]
    Config(#[from] weft_control::config::ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("pod {pod}: cannot issue its credential: {source}")]
    Credential {
        pod: String,
        source: weft_security::credential::CredentialError,
    },
    #[error("pod {pod}: {source}")]
    Secret {
        pod: String,
        source: weft_security::secret_file::FileError,
    },
    #[error("cannot listen on {addr}: {source} (is another weft up or an istiod running? weft down stops a mesh)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create namespaces here ({why}): {fix}")]
    NoNamespaces { why: String, fix: &'static str },
    #[error("a mesh is already up (weft up, pid {pid}) with state in {}: weft down stops it", state.display())]
    AlreadyUp { pid: i32, state: PathBuf },
    #[error("no mesh is up with state in {}", state.display())]
    NotUp { state: PathBuf },
    #[error("weft up (pid {pid}) did not stop within {within:?}")]
    StillRunning {
        pid: i32,
        within: std::time::Duration,
    },
    #[error("the sandbox exited ({status}); see {}", log.display())]
    SandboxExited { status: String, log: PathBuf },
}

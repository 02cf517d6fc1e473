//! The platform's state directory: the config the control plane keeps, logs, the pods'
//! specs, and `status.json`, which `weft status` reads. Written atomically.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    /// `$TMPDIR/weft-<uid>` unless told otherwise: per user, gone with a reboot like the
    /// namespaces it describes.
    pub fn default_root() -> PathBuf {
        std::env::temp_dir().join(format!("weft-{}", nix::unistd::getuid()))
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.json")
    }

    /// The `weft up` process that owns the running mesh.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("up.pid")
    }

    pub fn log_file(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.logs()
            .join(format!("{namespace}.{pod}.{container}.log"))
    }

    pub fn read_status(&self) -> std::io::Result<Status> {
        let text = std::fs::read_to_string(self.status_file())?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

/// What `weft status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `root` or `rootless`.
    pub mode: String,
    pub control_plane: String,
    pub pods: Vec<PodStatus>,
    /// Objects of an earlier run's config directory that the mesh file does not define:
    /// they still apply (`weft up --fresh` starts without them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub name: String,
    pub namespace: String,
    pub workload: String,
    pub ip: String,
    pub ready: bool,
    pub restarts: u32,
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&temp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&temp, path)
}

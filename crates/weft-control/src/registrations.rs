//! Workloads that proxies announce (Istio's WorkloadEntry auto-registration). They outlive a
//! proxy's stream by a grace period, and are kept in a state file so that a restarted
//! control plane still knows every endpoint while the proxies reconnect, instead of pushing
//! the first proxies back a mesh without the others.

use crate::config::ConfigState;
use crate::mesh::Change;
use crate::objects::{Object, Source};
use crate::store::write_atomic;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use weft_api::Resource;
use weft_discovery::discovery::Hello;
use weft_discovery::wire::Key;

/// Writes are coalesced over this window: a mass reconnect writes the file a few times,
/// not once per proxy.
const COALESCE: Duration = Duration::from_millis(200);

pub struct Registrations {
    /// Where they are kept; `None` keeps them in memory only.
    file: Option<PathBuf>,
    pub grace: Duration,
    changed: Notify,
    /// Whether announcements make endpoints at all.
    announcing: bool,
}

impl Registrations {
    pub fn new(file: Option<PathBuf>, grace: Duration) -> Registrations {
        Registrations {
            file,
            grace,
            changed: Notify::new(),
            announcing: true,
        }
    }

    pub fn announcing(self, announcing: bool) -> Registrations {
        Registrations { announcing, ..self }
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

impl ConfigState {
    /// Registers the workload a proxy announces as a WorkloadEntry.
    pub fn announce(&self, hello: &Hello) -> Option<Key> {
        if !self.registrations.announcing {
            return None;
        }
        let r = announced_workload(hello)?;
        let key = Key::of(&r);
        self.mesh().apply(Change {
            upserts: vec![(key.clone(), Object::new(r, Source::Announced))],
            removals: Vec::new(),
        });
        self.registrations.changed.notify_one();
        Some(key)
    }

    /// Withdraws an announced workload whose proxy has not come back.
    pub fn withdraw(&self, key: Key) {
        let mut mesh = self.mesh();
        let reconnected = mesh
            .proxies()
            .filter(|(_, p)| p.registered)
            .any(|(_, p)| announced_workload(&p.hello).is_some_and(|r| Key::of(&r) == key));
        if !reconnected {
            mesh.apply(Change {
                upserts: Vec::new(),
                removals: vec![key],
            });
            self.registrations.changed.notify_one();
        }
    }

    /// Brings back the workloads announced before a restart; each leaves after the grace
    /// period unless its proxy reconnects.
    pub fn restore_registrations(self: &Arc<Self>) {
        let Some(file) = self.registrations.file() else {
            return;
        };
        let restored = restore(file);
        if restored.is_empty() {
            return;
        }
        tracing::info!(
            workloads = restored.len(),
            "restored announced workloads; they stay while their proxies reconnect"
        );
        let keys: Vec<Key> = restored.iter().map(Key::of).collect();
        self.mesh().apply(Change {
            upserts: restored
                .into_iter()
                .map(|r| (Key::of(&r), Object::new(r, Source::Announced)))
                .collect(),
            removals: Vec::new(),
        });
        for key in keys {
            tokio::spawn(withdraw_later(self.clone(), key));
        }
    }

    /// Keeps the state file in step with the announced workloads, until dropped.
    pub async fn persist_registrations(self: Arc<Self>) {
        let Some(file) = self.registrations.file().map(Path::to_path_buf) else {
            return;
        };
        loop {
            self.registrations.changed.notified().await;
            tokio::time::sleep(COALESCE).await;
            let announced: Vec<serde_json::Value> = self
                .mesh()
                .objects()
                .iter()
                .filter(|(_, o)| o.source == Source::Announced)
                .filter_map(|(_, o)| serde_json::from_slice(&o.json).ok())
                .collect();
            // A `List`, so the file reads like any other config file.
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": announced});
            let json = serde_json::to_vec_pretty(&list).expect("JSON values serialize");
            let written = std::fs::create_dir_all(file.parent().expect("a file in a directory"))
                .map_err(|e| e.to_string())
                .and_then(|()| write_atomic(&file, &json).map_err(|e| e.to_string()));
            if let Err(e) = written {
                tracing::error!("cannot keep announced workloads in {}: {e}", file.display());
            }
        }
    }
}

/// Istio's label for the workload (Deployment) an endpoint belongs to, as metrics name it.
pub const WORKLOAD_NAME_LABEL: &str = "service.istio.io/workload-name";

/// Withdraws an announced workload after the grace period, unless its proxy is back.
pub async fn withdraw_later(state: Arc<ConfigState>, key: Key) {
    tokio::time::sleep(state.registrations.grace).await;
    state.withdraw(key);
}

/// The WorkloadEntry a proxy's hello stands for, named as Istio names auto-registered
/// workloads (`<name>-<address>`), with the workload it belongs to in Istio's
/// `service.istio.io/workload-name` label, as metrics name the workload.
pub fn announced_workload(hello: &Hello) -> Option<Resource> {
    if hello.address.is_empty() {
        return None;
    }
    let name = format!("{}-{}", hello.name, hello.address.replace(['.', ':'], "-"));
    let mut labels = hello.labels.clone();
    if !hello.workload_name.is_empty() {
        labels
            .entry(WORKLOAD_NAME_LABEL.into())
            .or_insert_with(|| hello.workload_name.clone());
    }
    let json = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {
            "name": name,
            "namespace": hello.namespace,
            "annotations": {"weft.dev/announced-by": format!("{}.{}", hello.name, hello.namespace)},
        },
        "spec": {
            "address": hello.address,
            "labels": labels,
            "serviceAccount": hello.service_account,
        },
    });
    let loaded = weft_api::load_str(&json.to_string(), Path::new("announced by a proxy"));
    if let Some(e) = loaded.errors().next() {
        tracing::warn!("cannot register the workload of proxy {}: {e}", hello.name);
        return None;
    }
    loaded.resources.into_iter().next()
}

/// The workloads in the state file; a missing or unreadable file is an empty list (it only
/// speeds up recovery).
fn restore(file: &Path) -> Vec<Resource> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let loaded = weft_api::load_str(&text, file);
    if loaded.has_errors() {
        tracing::warn!(
            "ignoring {}: {}",
            file.display(),
            loaded
                .errors()
                .next()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        return Vec::new();
    }
    loaded
        .resources
        .into_iter()
        .filter(|r| r.kind == weft_api::Kind::WorkloadEntry)
        .collect()
}

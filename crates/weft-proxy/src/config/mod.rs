//! The proxy's configuration: the current [`Snapshot`] behind an atomic pointer, replaced
//! whole when a new version compiles, and the sources that feed it. A version that does not
//! load or compile is rejected and the last good one keeps serving.

mod file;
mod stream;

pub use file::FileSource;
pub use stream::{Backoff, StreamSource};

use crate::gateway::GatewayListeners;
use crate::model::{compile_within, Snapshot};
use crate::workload::Workload;
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::watch;
use weft_api::types::OutboundTrafficMode;
use weft_api::Resource;

/// What has happened to the configuration so far; tests and readiness wait on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigStatus {
    /// The version being served; 0 until the first config is applied.
    pub version: u64,
    pub rejected: u64,
    pub last_error: Option<String>,
    /// Gateway mode: the listeners the Gateway servers asked for, as last opened.
    pub gateway: Option<GatewayListeners>,
}

pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    status: watch::Sender<ConfigStatus>,
    workload: Workload,
    outbound_policy: OutboundTrafficMode,
    regex_size_limit: usize,
    /// Serialises compiles so cluster reuse always sees the previous version.
    apply_lock: tokio::sync::Mutex<()>,
}

impl ConfigStore {
    pub fn new(
        workload: Workload,
        outbound_policy: OutboundTrafficMode,
        regex_size_limit: usize,
    ) -> ConfigStore {
        ConfigStore {
            regex_size_limit,
            current: ArcSwap::from_pointee(Snapshot::empty(workload.clone(), outbound_policy)),
            status: watch::channel(ConfigStatus::default()).0,
            workload,
            outbound_policy,
            apply_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn status(&self) -> ConfigStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ConfigStatus> {
        self.status.subscribe()
    }

    pub fn is_ready(&self) -> bool {
        self.status.borrow().version > 0
    }

    /// Compiles and swaps in a new version; in-flight requests finish on the old one.
    pub async fn apply(&self, resources: Vec<Resource>) -> Result<u64, String> {
        let _guard = self.apply_lock.lock().await;
        let previous = self.current.load();
        let version = self.status.borrow().version + 1;
        match compile_within(
            resources,
            &self.workload,
            self.outbound_policy,
            version,
            &previous.clusters,
            self.regex_size_limit,
        ) {
            Ok(snapshot) => {
                self.current.store(Arc::new(snapshot));
                self.status.send_modify(|s| {
                    s.version = version;
                    s.last_error = None;
                });
                tracing::info!(version, "config applied");
                Ok(version)
            }
            Err(e) => {
                self.reject(e.clone());
                Err(e)
            }
        }
    }

    /// Gateway mode: publishes the listeners that now serve `listeners.version`.
    pub(crate) fn report_gateway_listeners(&self, listeners: GatewayListeners) {
        self.status.send_modify(|s| s.gateway = Some(listeners));
    }

    pub fn reject(&self, error: String) {
        tracing::error!("config rejected, still serving the last good version: {error}");
        self.status.send_modify(|s| {
            s.rejected += 1;
            s.last_error = Some(error);
        });
    }
}

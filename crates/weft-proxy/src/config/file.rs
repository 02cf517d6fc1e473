//! `weft proxy --config DIR`: the proxy reads its config from a directory, without a
//! control plane.

use super::ConfigStore;
use std::path::PathBuf;
use std::sync::Arc;

/// Reads a directory of YAML/JSON files, then re-reads it whenever a file changes.
pub struct FileSource {
    pub dir: PathBuf,
}

impl FileSource {
    pub async fn load_once(&self, store: &ConfigStore) -> Result<u64, String> {
        let loaded = weft_api::load_path(&self.dir).map_err(|e| e.to_string());
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                store.reject(e.clone());
                return Err(e);
            }
        };
        for w in loaded.warnings() {
            tracing::warn!("{w}");
        }
        if loaded.has_errors() {
            let text = loaded
                .errors()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            store.reject(text.clone());
            return Err(text);
        }
        store.apply(loaded.resources).await
    }

    /// Loads now and on every change until the store is dropped.
    pub async fn run(self, store: Arc<ConfigStore>) -> Result<(), notify::Error> {
        // Any change re-reads the whole directory: a proxy's config is small.
        weft_discovery::watch::watch_dir(&self.dir, |_| async {
            let _ = self.load_once(&store).await;
        })
        .await
    }
}

//! `weft control --mesh-config FILE`, as istiod's `--meshConfig`: the MeshConfig read from a
//! file beside the config directory, watched, and served as the `istio` ConfigMap of the
//! root namespace. Read first, so an `istio` ConfigMap applied to the directory wins.

use crate::store::{ConfigSource, StoreError};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use weft_api::Resource;
use weft_discovery::wire::Key;

pub struct WithMeshConfig {
    file: PathBuf,
    inner: Box<dyn ConfigSource>,
}

impl WithMeshConfig {
    pub fn new(file: &Path, inner: Box<dyn ConfigSource>) -> Result<WithMeshConfig, StoreError> {
        // The watcher reports absolute paths.
        let file = std::path::absolute(file).map_err(|source| StoreError::Io {
            action: "resolve",
            path: file.to_path_buf(),
            source,
        })?;
        Ok(WithMeshConfig { file, inner })
    }
}

impl ConfigSource for WithMeshConfig {
    fn partitions(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut all = vec![self.file.clone()];
        all.extend(self.inner.partitions()?);
        Ok(all)
    }

    fn owns(&self, partition: &Path) -> bool {
        partition == self.file || self.inner.owns(partition)
    }

    fn content(&self, partition: &Path) -> Result<Option<String>, StoreError> {
        if partition != self.file {
            return self.inner.content(partition);
        }
        std::fs::read_to_string(&self.file)
            .map(Some)
            .map_err(|source| StoreError::Io {
                action: "read the mesh config",
                path: self.file.clone(),
                source,
            })
    }

    fn parse(&self, partition: &Path, content: &str) -> Result<Vec<Resource>, StoreError> {
        if partition != self.file {
            return self.inner.parse(partition, content);
        }
        crate::store::checked(weft_api::load_mesh_config(content, &self.file), &self.file)
    }

    fn partition_for(&self, key: &Key) -> PathBuf {
        self.inner.partition_for(key)
    }

    fn put(
        &self,
        key: &Key,
        resource: &Resource,
        previous: Option<&Resource>,
    ) -> Result<(), StoreError> {
        self.inner.put(key, resource, previous)
    }

    fn delete(&self, key: &Key, current: &Resource) -> Result<(), StoreError> {
        self.inner.delete(key, current)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }

    fn missing_blocks_readiness(&self) -> bool {
        self.inner.missing_blocks_readiness()
    }

    fn watch(
        &self,
        changed: tokio::sync::mpsc::UnboundedSender<Option<BTreeSet<PathBuf>>>,
    ) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.watch(changed.clone());
        let file = self.file.clone();
        tokio::spawn(async move {
            let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
            let watching = weft_discovery::watch::watch_dir(&dir, |paths| {
                // Everything is re-read, not the file alone, so that an `istio` ConfigMap of
                // the directory keeps winning. The first report (None) comes once this watch is
                // in place: a re-read then catches a change made before it was.
                if paths.is_none_or(|p| p.contains(&file)) {
                    let _ = changed.send(None);
                }
                std::future::ready(())
            })
            .await;
            if let Err(e) = watching {
                tracing::error!("cannot watch the mesh config {}: {e}", file.display());
            }
            // Keeps the config directory's watch alive as long as this one.
            drop(inner);
        })
    }
}

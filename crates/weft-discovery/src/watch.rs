//! A watched config directory: told which files changed after every burst of changes.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Changes within this window are read as one.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Calls `reload(None)` ("read everything") once the watch is in place, so no change can
/// slip between a first read and the watch, then `reload(Some(files))` after every burst of
/// changes, until the caller drops this future. Hidden and temporary files are reported
/// too: filter them with `weft_api::load::is_config_file` (a removed file no longer passes).
pub async fn watch_dir<F, Fut>(dir: &Path, mut reload: F) -> Result<(), notify::Error>
where
    F: FnMut(Option<BTreeSet<PathBuf>>) -> Fut,
    Fut: Future<Output = ()>,
{
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(e) if !e.kind.is_access() => {
                let _ = tx.send(e.paths);
            }
            _ => {}
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    reload(None).await;
    while let Some(paths) = rx.recv().await {
        let mut changed: BTreeSet<PathBuf> = paths.into_iter().collect();
        tokio::time::sleep(DEBOUNCE).await;
        while let Ok(more) = rx.try_recv() {
            changed.extend(more);
        }
        reload(Some(changed)).await;
    }
    Ok(())
}

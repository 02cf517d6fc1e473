//! A watched config directory: read once, then again after every burst of changes.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// Changes within this window are read as one.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Calls `reload` now and after every burst of changes to `dir`, until `reload`'s caller
/// drops this future.
pub async fn watch_dir<F, Fut>(dir: &Path, mut reload: F) -> Result<(), notify::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    reload().await;
    while rx.recv().await.is_some() {
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        reload().await;
    }
    Ok(())
}

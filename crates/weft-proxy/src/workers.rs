//! Connection workers, as Envoy's: each a thread with its own single-threaded runtime that
//! accepts connections and runs every task they spawn, upstream connections included. A
//! request then never wakes another thread; on tokio's work-stealing runtime, two workers
//! woke each other about twice a request (a futex each), which cost more than the second
//! worker gave on two shared cores (bench/README.md, "The worker count").

use std::cell::Cell;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// 1 + the index of the worker this thread runs; 0 off the workers.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Which worker runs the calling code (0 off the workers), so that per-worker state such as
/// upstream connection pools stays with the thread that uses it.
pub fn current() -> usize {
    INDEX.get()
}

/// The running workers. Empty (the default) means the runtime of whoever spawns, as tests
/// that start a proxy inside their own runtime want. The threads stop once every clone is
/// dropped.
#[derive(Clone, Default)]
pub struct Workers {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    handles: Vec<Handle>,
    /// Dropping these ends each worker's `block_on`, which drops its runtime.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` workers; `on_park` runs on a worker each time it goes idle.
    pub fn start(n: usize, on_park: fn()) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(on_park)
                .build()?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("weft-worker-{i}"))
                .spawn(move || {
                    INDEX.set(i + 1);
                    let _ = runtime.block_on(rx);
                })?;
        }
        Ok(Workers {
            inner: Some(Arc::new(Inner {
                handles,
                _stop: stop,
            })),
        })
    }

    /// The workers' runtimes; `None` without workers.
    pub fn handles(&self) -> Option<&[Handle]> {
        self.inner.as_ref().map(|inner| &inner.handles[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_runs_its_tasks_on_its_own_thread() {
        fn nothing() {}
        let workers = Workers::start(2, nothing).unwrap();
        let mut seen = Vec::new();
        for handle in workers.handles().unwrap() {
            let (index, thread) = handle
                .spawn(async {
                    // A task spawned from a worker's task stays on that worker.
                    tokio::spawn(async { (current(), std::thread::current().id()) })
                        .await
                        .unwrap()
                })
                .await
                .unwrap();
            seen.push((index, thread));
        }
        assert_eq!(seen[0].0, 1);
        assert_eq!(seen[1].0, 2);
        assert_ne!(seen[0].1, seen[1].1);
        assert_ne!(seen[0].1, std::thread::current().id());
        assert_eq!(current(), 0);
        assert!(Workers::default().handles().is_none());
    }
}

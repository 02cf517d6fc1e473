//! The global allocator (mimalloc) and the heartbeat that lets it give freed memory back
//! to the system while the process is idle.

use std::cell::Cell;
use std::time::Duration;
use tokio::time::Instant;

// The request path allocates small, short-lived buffers from many threads; glibc's
// allocator took a third of the proxy's user time (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns freed pages once they have been free for its purge delay (10 ms, 100 ms
/// for arena memory), but only when some thread later calls into it: a proxy that goes
/// quiet after thousands of connections close would keep their memory. A collect per second
/// is that later call.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// At most one collect per worker in this span. Only the owning thread can collect its heap
/// and a parked worker may not wake for a long while, so what others freed since its last
/// collect stays until then: a once-a-second limit kept up to 73 % of a burst of closed
/// connections' memory (tests/idle_connections.rs), where 5 ms keeps 10-23 %. Collecting on
/// every park instead cost 10 % more CPU per request at 1,000 requests/s (bench/README.md).
const COLLECT_AT_MOST_EVERY: Duration = Duration::from_millis(5);

/// For a runtime's `on_thread_park`: a worker going idle collects its own heap, which frees
/// pages whose blocks other threads freed, so the heartbeat can return them.
#[allow(unsafe_code)]
pub fn collect_when_idle() {
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    if LAST
        .get()
        .is_some_and(|last| now - last < COLLECT_AT_MOST_EVERY)
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: as in `return_freed_memory`.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Starts the heartbeat for the life of a long-running process (proxy, control plane).
#[allow(unsafe_code)]
pub fn return_freed_memory() {
    let spawned = std::thread::Builder::new()
        .name("weft-allocator".into())
        .spawn(|| loop {
            std::thread::sleep(HEARTBEAT);
            // SAFETY: `mi_collect` takes no pointers and may be called from any thread at
            // any time; without `force` it only frees what is already free.
            unsafe { libmimalloc_sys::mi_collect(false) };
        });
    if let Err(e) = spawned {
        tracing::warn!("freed memory is returned to the system only under load: {e}");
    }
}

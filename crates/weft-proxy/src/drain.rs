//! Draining on shutdown, as Istio drains a sidecar on SIGTERM (Envoy's
//! `drain_listeners?inboundonly&graceful`): the inbound and gateway listeners close, their
//! connections finish what they carry and close (HTTP/1.1 `Connection: close`, HTTP/2
//! GOAWAY), readiness fails. The outbound listener keeps serving, so an app finishing its
//! last requests can still call out. How long the drain lasts is the caller's decision.

use tokio::sync::watch;

/// The proxy's drain switch: flipped once, never back.
pub struct Drain {
    tx: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// Starts draining; `false` when it had already started.
    pub fn start(&self) -> bool {
        self.tx
            .send_if_modified(|draining| !std::mem::replace(draining, true))
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    /// What a listener or connection waits on: its own receiver, so nothing is shared per
    /// request.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch(self.tx.subscribe())
    }
}

pub struct DrainWatch(watch::Receiver<bool>);

impl DrainWatch {
    /// Resolves once draining has started (at once if it already has).
    pub async fn started(&mut self) {
        if self.0.wait_for(|draining| *draining).await.is_err() {
            // The proxy is gone: nothing will start a drain.
            std::future::pending::<()>().await;
        }
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_starts_once_and_every_watch_sees_it() {
        let drain = Drain::default();
        let mut before = drain.watch();
        assert!(!drain.is_draining() && !before.is_draining());
        assert!(drain.start());
        assert!(!drain.start(), "a second start is not a new drain");
        before.started().await;
        let mut after = drain.watch();
        after.started().await;
        assert!(after.is_draining());
    }
}

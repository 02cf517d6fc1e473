//! How the platform stops, as a kubelet stops a pod: SIGTERM to each layer, which stops the
//! one below it, and SIGKILL to whatever outlives its grace period. Each layer waits a margin
//! longer than the one below it, so the innermost (the sidecar's drain) decides.

use std::time::Duration;

/// The sidecar's drain on SIGTERM (`weft proxy --drain-duration`; Istio's
/// `terminationDrainDuration` default).
pub const PROXY_DRAIN: Duration = Duration::from_secs(5);
/// What each layer adds to the one below: exiting, reaping, signalling.
const MARGIN: Duration = Duration::from_secs(2);
/// A pod's processes (app and sidecar) from its SIGTERM, as `terminationGracePeriodSeconds`.
pub const POD_GRACE: Duration = PROXY_DRAIN.saturating_add(MARGIN);
/// The sandbox's pods.
pub const SANDBOX_GRACE: Duration = POD_GRACE.saturating_add(MARGIN);
/// `weft up`'s sandbox.
pub const UP_GRACE: Duration = SANDBOX_GRACE.saturating_add(MARGIN);
/// `weft down`'s wait for `weft up`.
pub const DOWN_GRACE: Duration = UP_GRACE.saturating_add(MARGIN);

/// SIGTERM and SIGINT as one stream: the platform treats Ctrl-C as `weft down`.
pub struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers; call it first, so an early SIGTERM is not the default action.
    pub fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

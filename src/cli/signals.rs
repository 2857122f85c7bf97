//! SIGTERM and SIGINT as the daemon sees them.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The shutdown signals the daemon listens for.
pub(super) struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    pub(super) fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT; returns its name.
    pub(super) async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    /// The next SIGINT.
    pub(super) async fn next_interrupt(&mut self) {
        self.interrupt.recv().await;
    }
}

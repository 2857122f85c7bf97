//! The last line of defence of a shutdown: a thread of its own that ends the
//! process if the shutdown did not, a short grace after its deadline.
//!
//! The supervisor already kills what does not drain by the deadline, but a task
//! that never yields holds its worker thread, and a kill cannot interrupt it; with
//! enough of them the runtime makes no progress at all. A plain OS thread does not
//! depend on the runtime, so the process always ends.

use std::sync::mpsc;
use std::time::Duration;

use keel_core::registry::{ActorState, Registry};

/// How long after the shutdown deadline the process is ended regardless.
pub(super) const GRACE: Duration = Duration::from_secs(5);

/// An armed watchdog; dropping it disarms it.
pub(super) struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    /// Ends the process with `code` unless disarmed within `after`.
    pub(super) fn arm(after: Duration, registry: Registry, code: u8) -> Self {
        let (disarm, disarmed) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("keel-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(after) {
                    let running: Vec<String> = registry
                        .snapshot()
                        .actors
                        .into_iter()
                        .filter(|a| !matches!(a.state, ActorState::Stopped | ActorState::Failed))
                        .map(|a| a.name)
                        .collect();
                    tracing::error!(
                        ?running,
                        after = %humantime::format_duration(after),
                        code,
                        "Shutdown did not finish; exiting hard."
                    );
                    std::process::exit(i32::from(code));
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "Cannot start the shutdown watchdog.");
        }
        Self { _disarm: disarm }
    }
}

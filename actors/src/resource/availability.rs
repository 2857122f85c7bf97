//! Whether a resource can currently reach its server, as shown in the registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::registry::Probe;

use super::Status;

/// Shared by a resource's connect loop and its calls: each outcome keeps the
/// registry's `status` detail and last error current, without a monitor task.
#[derive(Clone, Debug)]
pub struct Availability {
    ready: Arc<AtomicBool>,
    probe: Probe,
}

impl Availability {
    /// Starts as `connecting`.
    pub fn new(probe: Probe) -> Self {
        probe.set_detail("status", Status::Connecting.as_str());
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            probe,
        }
    }

    /// The server answered.
    pub fn mark_ready(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.probe.set_detail("status", Status::Ready.as_str());
            tracing::info!(resource = %self.probe.name(), "Connected.");
        }
    }

    /// The server could not be reached; `cause` is the real reason (refused,
    /// authentication failed, DNS), never a secret.
    pub fn mark_unreachable(&self, cause: &str) {
        self.probe.record_error(cause);
        if self.ready.swap(false, Ordering::AcqRel) {
            self.probe.set_detail("status", Status::Connecting.as_str());
            tracing::warn!(resource = %self.probe.name(), %cause, "Lost the server; reconnecting on demand.");
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        if self.ready.load(Ordering::Acquire) {
            Status::Ready
        } else {
            Status::Connecting
        }
    }

    /// The registry entry this reports into.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }
}

//! Whether a resource can currently reach its server, as shown in the registry
//! and as callers wait on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keel_core::registry::Probe;

use super::Status;

/// Shared by a resource's connect loop, its health checks and its calls: each
/// outcome keeps the registry's `status` and `cause` details, its last error and
/// its readiness watch (what waiting callers wait on) current, without a monitor
/// task.
#[derive(Clone, Debug)]
pub struct Availability {
    ready: Arc<AtomicBool>,
    /// Whether `cause` holds what the server or the OS said (not just that no
    /// connection was free in time), so a timeout does not hide it.
    real_cause: Arc<AtomicBool>,
    probe: Probe,
}

/// How a call says that the pool had no connection for it in time: a symptom
/// of the outage, never its cause.
pub(crate) const CHECKOUT_TIMED_OUT: &str = "no connection within checkout_timeout";

impl Availability {
    /// Starts as `connecting`.
    pub fn new(probe: Probe) -> Self {
        probe.set_detail("status", Status::Connecting.as_str());
        probe.set_ready(false);
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            real_cause: Arc::new(AtomicBool::new(false)),
            probe,
        }
    }

    /// The server answered.
    pub fn mark_ready(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.probe.set_detail("status", Status::Ready.as_str());
            self.probe.clear_detail("cause");
            self.real_cause.store(false, Ordering::Release);
            self.probe.set_ready(true);
            tracing::info!(resource = %self.probe.name(), "Connected.");
        }
    }

    /// The server could not be reached; `cause` is the real reason (refused,
    /// authentication failed, DNS), never a secret.
    pub fn mark_unreachable(&self, cause: &str) {
        let symptom = cause == CHECKOUT_TIMED_OUT;
        let known = self.real_cause.load(Ordering::Acquire);
        if !(symptom && known && !self.ready.load(Ordering::Acquire)) {
            self.probe.record_error(cause);
            self.probe.set_detail("cause", cause);
            self.real_cause.store(!symptom, Ordering::Release);
        }
        if self.ready.swap(false, Ordering::AcqRel) {
            self.probe.set_detail("status", Status::Connecting.as_str());
            self.probe.set_ready(false);
            tracing::warn!(resource = %self.probe.name(), %cause, "Lost the server; reconnecting.");
        }
    }

    /// The incarnation is gone: nobody should wait on it.
    pub(super) fn mark_stopped(&self) {
        self.ready.store(false, Ordering::Release);
        self.probe.set_ready(false);
        self.probe.set_detail("status", Status::Connecting.as_str());
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

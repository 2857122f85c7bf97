//! Whether a resource can currently reach its server, as shown in the registry
//! and as callers wait on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keel_core::registry::{Probe, Readiness};

use super::Status;

/// Shared by a resource's connect loop, its health checks and its calls: each
/// outcome keeps the registry's `status` and `cause` details, its last error and
/// its readiness watch (what waiting callers wait on) current, without a monitor
/// task. Only the live incarnation writes the registry: a stopped one's late
/// outcomes (its state dropped after the next incarnation connected) are its own.
#[derive(Clone, Debug)]
pub struct Availability {
    ready: Arc<AtomicBool>,
    /// Whether `cause` holds what the server or the OS said (not just that no
    /// connection was free in time), so a timeout does not hide it.
    real_cause: Arc<AtomicBool>,
    claim: Readiness,
}

/// How a call says that the pool had no connection for it in time: a symptom
/// of the outage, never its cause.
pub(crate) const CHECKOUT_TIMED_OUT: &str = "no connection within checkout_timeout";

/// Why a resource could not reach its server (a failed health check, connect
/// attempt or call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.as_str())]
pub enum Unreachable {
    /// What the server or the OS said (refused, authentication failed, DNS);
    /// never a secret.
    Said(String),
    /// No connection was free within `checkout_timeout`: a symptom of the
    /// outage, never its cause, so it does not hide a cause already known.
    CheckoutTimedOut,
}

impl Unreachable {
    /// What the registry and `/readyz` show.
    pub fn as_str(&self) -> &str {
        match self {
            Unreachable::Said(cause) => cause,
            Unreachable::CheckoutTimedOut => CHECKOUT_TIMED_OUT,
        }
    }
}

impl Availability {
    /// Starts as `connecting`.
    pub fn new(probe: &Probe) -> Self {
        let claim = probe.claim_readiness();
        claim.write(|probe| {
            probe.set_detail("status", Status::Connecting.as_str());
            probe.set_ready(false);
        });
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            real_cause: Arc::new(AtomicBool::new(false)),
            claim,
        }
    }

    /// The server answered.
    pub fn mark_ready(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            let current = self.claim.write(|probe| {
                probe.set_detail("status", Status::Ready.as_str());
                probe.set_cause(None);
                probe.set_ready(true);
            });
            self.real_cause.store(false, Ordering::Release);
            if current {
                tracing::info!(resource = %self.probe().name(), "Connected.");
            }
        }
    }

    /// The server could not be reached, and why.
    pub fn mark_unreachable(&self, why: &Unreachable) {
        let symptom = *why == Unreachable::CheckoutTimedOut;
        let cause = why.as_str();
        let known = self.real_cause.load(Ordering::Acquire);
        if !(symptom && known && !self.ready.load(Ordering::Acquire)) {
            self.claim.write(|probe| {
                probe.record_error(cause);
                probe.set_cause(Some(cause));
            });
            self.real_cause.store(!symptom, Ordering::Release);
        }
        if self.ready.swap(false, Ordering::AcqRel) {
            let current = self.claim.write(|probe| {
                probe.set_detail("status", Status::Connecting.as_str());
                probe.set_ready(false);
            });
            if current {
                tracing::warn!(resource = %self.probe().name(), %cause, "Lost the server; reconnecting.");
            }
        }
    }

    /// The incarnation is gone: nobody should wait on it, unless the next one
    /// already said it can serve.
    pub(super) fn mark_stopped(&self) {
        self.ready.store(false, Ordering::Release);
        self.claim.write(|probe| {
            probe.set_ready(false);
            probe.set_detail("status", Status::Connecting.as_str());
        });
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
        self.claim.probe()
    }
}

#[cfg(test)]
mod tests {
    use keel_core::registry::{ActorKind, Registry};

    use super::*;

    fn status(registry: &Registry) -> Option<serde_json::Value> {
        registry.snapshot().actors[0].details.get("status").cloned()
    }

    /// A restart's old incarnation is dropped after the new one may already have
    /// connected: its last word must not make the live one look down forever.
    #[test]
    fn a_stopped_incarnation_cannot_undo_the_live_one() {
        let registry = Registry::default();
        let probe = registry
            .register("redis", ActorKind::Resource, None)
            .unwrap();
        let old = Availability::new(&probe);
        old.mark_ready();
        let new = Availability::new(&probe);
        assert!(!probe.is_ready(), "between incarnations nobody is ready");
        new.mark_ready();
        old.mark_unreachable(&Unreachable::Said("connection refused".into()));
        old.mark_stopped();
        assert!(probe.is_ready());
        assert_eq!(status(&registry), Some("ready".into()));
        assert_eq!(registry.snapshot().actors[0].details.get("cause"), None);

        new.mark_stopped();
        assert!(!probe.is_ready());
        assert_eq!(status(&registry), Some("connecting".into()));
    }
}

//! One actor's entry in the registry and the [`Probe`] it is written through.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use ractor::ActorCell;

use super::ring::{MessageRecord, Ring};
use super::snapshot::{ActorSnapshot, Serving};
use super::state::{ActorKind, ActorState, Failure};
use crate::mailbox::{self, Depth};
use crate::stats::{Computed, Handle, Stats};

/// Registration order across all registries; only relative order matters.
static NEXT_ORDER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Status {
    state: ActorState,
    restarts: u32,
    last_failure: Option<Failure>,
    running_since: Option<(Instant, SystemTime)>,
    details: BTreeMap<String, serde_json::Value>,
    /// Why it cannot serve, while it cannot (see [`Probe::set_cause`]).
    cause: Option<String>,
}

#[derive(Debug)]
pub(super) struct Entry {
    name: String,
    kind: ActorKind,
    parent: Option<String>,
    order: u64,
    status: Mutex<Status>,
    messages_handled: AtomicU64,
    /// Messages queued for the live incarnation (see [`crate::mailbox`]).
    depth: Depth,
    /// Whether handled messages are counted and recorded at all; off only to
    /// measure what inspection costs.
    record: bool,
    ring: Mutex<Ring>,
    cell: Mutex<Option<ActorCell>>,
    live: Mutex<LiveDetails>,
    /// Whether the actor can serve now (a resource: running and reaching its
    /// server). Outlives incarnations, so callers can wait for the next one.
    ready: tokio::sync::watch::Sender<bool>,
    /// Which incarnation may write readiness (see [`Readiness`]); held while it
    /// writes, so a check and its write cannot be split by a newer claim.
    readiness_owner: Mutex<u64>,
}

#[derive(Default)]
struct LiveDetails(BTreeMap<String, Arc<dyn Stats>>);

impl std::fmt::Debug for LiveDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Entry {
    pub(super) fn new(
        name: &str,
        kind: ActorKind,
        parent: Option<String>,
        ring_capacity: usize,
        record: bool,
    ) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            parent,
            order: NEXT_ORDER.fetch_add(1, Ordering::Relaxed),
            status: Mutex::new(Status {
                state: ActorState::Starting,
                restarts: 0,
                last_failure: None,
                running_since: None,
                details: BTreeMap::new(),
                cause: None,
            }),
            messages_handled: AtomicU64::new(0),
            depth: Arc::new(AtomicI64::new(0)),
            record,
            ring: Mutex::new(Ring::new(ring_capacity)),
            cell: Mutex::new(None),
            live: Mutex::default(),
            ready: tokio::sync::watch::channel(false).0,
            readiness_owner: Mutex::new(0),
        }
    }

    pub(super) fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub(super) fn cell(&self) -> Option<ActorCell> {
        self.cell.lock().clone()
    }

    pub(super) fn messages_after(&self, seq: u64) -> Vec<MessageRecord> {
        self.ring.lock().after(seq)
    }

    pub(super) fn recent_messages(&self, limit: usize) -> Vec<MessageRecord> {
        self.ring.lock().latest(limit)
    }

    pub(super) fn snapshot(&self) -> ActorSnapshot {
        // Read outside the status lock: a live detail may take locks of its own.
        let stats: Vec<(String, Arc<dyn Stats>)> = self
            .live
            .lock()
            .0
            .iter()
            .map(|(k, s)| (k.clone(), Arc::clone(s)))
            .collect();
        let live: Vec<(String, serde_json::Value)> = stats
            .iter()
            .filter_map(|(k, s)| Some((k.clone(), s.show()?)))
            .collect();
        let stats = stats.into_iter().map(|(_, s)| Handle(s)).collect();
        // Read before the status lock: a readiness write holds the owner lock
        // while it takes the status lock.
        let claimed = *self.readiness_owner.lock() > 0;
        let ready = *self.ready.borrow();
        let status = self.status.lock();
        let serving = claimed.then(|| {
            if ready {
                Serving::Ready
            } else {
                Serving::Waiting {
                    cause: status.cause.clone(),
                }
            }
        });
        let mut details = status.details.clone();
        details.extend(live);
        // The typed cause is also the `cause` detail operators read.
        if let Some(cause) = &status.cause {
            details.insert("cause".into(), cause.clone().into());
        }
        ActorSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            parent: self.parent.clone(),
            order: self.order,
            state: status.state,
            restarts: status.restarts,
            last_failure: status.last_failure.clone(),
            running_since: status.running_since.map(|(_, wall)| wall),
            uptime: status.running_since.map(|(started, _)| started.elapsed()),
            messages_handled: self.messages_handled.load(Ordering::Relaxed),
            mailbox_depth: u64::try_from(self.depth.load(Ordering::Relaxed)).unwrap_or(0),
            details,
            serving,
            stats,
        }
    }
}

/// One incarnation's right to write its actor's readiness and status details,
/// until a later incarnation claims it (see [`Probe::claim_readiness`]).
#[derive(Clone, Debug)]
pub struct Readiness {
    probe: Probe,
    generation: u64,
}

impl Readiness {
    /// Runs `write` on the entry if this incarnation is still the latest to have
    /// claimed it; answers whether it ran.
    pub fn write(&self, write: impl FnOnce(&Probe)) -> bool {
        let owner = self.probe.entry.readiness_owner.lock();
        let current = *owner == self.generation;
        if current {
            write(&self.probe);
        }
        current
    }

    /// The entry written to.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }
}

/// An actor's handle on its own registry entry; cheap to clone.
///
/// The supervisor writes lifecycle fields (state, restarts, failures); the actor
/// itself writes its messages (through [`crate::recorded::Recorded`]) and its
/// actor-specific details (pool status, breaker state, lag).
#[derive(Clone, Debug)]
pub struct Probe {
    entry: Arc<Entry>,
}

impl Probe {
    pub(super) fn new(entry: Arc<Entry>) -> Self {
        Self { entry }
    }

    /// The actor's unique name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The actor's kind.
    pub fn kind(&self) -> ActorKind {
        self.entry.kind
    }

    /// The actor's current state.
    pub fn state(&self) -> ActorState {
        self.entry.status.lock().state
    }

    /// Moves the actor to `state`; entering `Running` restarts the uptime clock.
    pub fn set_state(&self, state: ActorState) {
        let mut status = self.entry.status.lock();
        status.running_since = match state {
            ActorState::Running => Some((Instant::now(), SystemTime::now())),
            _ => None,
        };
        status.state = state;
    }

    /// Records a failure and the restart it leads to.
    pub fn record_restart(&self, reason: &str) {
        let mut status = self.entry.status.lock();
        status.restarts += 1;
        status.state = ActorState::Restarting;
        status.running_since = None;
        status.last_failure = Some(Failure {
            reason: reason.to_owned(),
            at: SystemTime::now(),
        });
    }

    /// Records a restart caused by a sibling's failure (one_for_all, rest_for_one):
    /// counted as a restart, but it is not this actor's failure.
    pub fn record_sibling_restart(&self) {
        let mut status = self.entry.status.lock();
        status.restarts += 1;
        status.state = ActorState::Restarting;
        status.running_since = None;
    }

    /// Records a failure that ends the actor for good.
    pub fn record_final_failure(&self, reason: &str) {
        let mut status = self.entry.status.lock();
        status.state = ActorState::Failed;
        status.running_since = None;
        status.last_failure = Some(Failure {
            reason: reason.to_owned(),
            at: SystemTime::now(),
        });
    }

    /// Stores the last error an actor met without failing (a refused connection
    /// while it keeps retrying), so the operator sees the real cause.
    pub fn record_error(&self, reason: &str) {
        self.entry.status.lock().last_failure = Some(Failure {
            reason: reason.to_owned(),
            at: SystemTime::now(),
        });
    }

    /// Sets one actor-specific detail shown next to the lifecycle fields.
    pub fn set_detail(&self, key: &str, value: impl Into<serde_json::Value>) {
        self.entry
            .status
            .lock()
            .details
            .insert(key.to_owned(), value.into());
    }

    /// Removes a detail.
    pub fn clear_detail(&self, key: &str) {
        self.entry.status.lock().details.remove(key);
    }

    /// Says whether the actor can serve now (for a resource: it runs and reaches
    /// its server); callers wait on it through [`crate::registry::Registry::ready`].
    pub fn set_ready(&self, ready: bool) {
        self.entry.ready.send_if_modified(|now| {
            let changed = *now != ready;
            *now = ready;
            changed
        });
    }

    /// Why the actor cannot serve (`None`: it can, or says nothing), as
    /// `/readyz` reports it and the `cause` detail shows it; never a secret.
    pub fn set_cause(&self, cause: Option<&str>) {
        self.entry.status.lock().cause = cause.map(str::to_owned);
    }

    /// Whether the actor said it can serve.
    pub fn is_ready(&self) -> bool {
        *self.entry.ready.borrow()
    }

    /// Makes the caller (a new incarnation) the only one whose [`Readiness`]
    /// writes take effect: whatever an earlier incarnation still writes (its
    /// state dropped after the next one started, a call that was finishing)
    /// cannot undo what the live one says.
    pub fn claim_readiness(&self) -> Readiness {
        let mut owner = self.entry.readiness_owner.lock();
        *owner += 1;
        Readiness {
            probe: self.clone(),
            generation: *owner,
        }
    }

    /// Sets a detail computed each time the registry is read. The closure should
    /// hold its source weakly and answer `None` once it is gone, so a stopped
    /// actor's pool is not kept alive by its registry entry.
    pub fn set_live_detail(
        &self,
        key: &str,
        read: impl Fn() -> Option<serde_json::Value> + Send + Sync + 'static,
    ) {
        self.set_stats(key, Computed(read));
    }

    /// Registers typed stats under `key`: shown as that detail, and exported to
    /// `/metrics`. Like a live detail, they should hold their source weakly.
    pub fn set_stats(&self, key: &str, stats: impl Stats) {
        self.entry
            .live
            .lock()
            .0
            .insert(key.to_owned(), Arc::new(stats));
    }

    /// Sets (or clears) the live incarnation, so others can reach it by name.
    /// An incarnation that is replaced or cleared leaves the mailbox table, which
    /// covers incarnations that were killed and never ran `post_stop`.
    pub fn set_cell(&self, cell: Option<ActorCell>) {
        let previous = std::mem::replace(&mut *self.entry.cell.lock(), cell.clone());
        if let Some(previous) = previous {
            if cell.as_ref().map(ActorCell::get_id) != Some(previous.get_id()) {
                mailbox::leave(previous.get_id());
            }
        }
    }

    /// Enters a new incarnation in the mailbox table, with an empty mailbox.
    pub(crate) fn enter_incarnation(&self, id: ractor::ActorId) {
        if self.entry.record {
            mailbox::enter(id, Arc::clone(&self.entry.depth));
        }
    }

    /// A message was taken from the mailbox and is about to be handled: one less
    /// waiting, one more handled and kept in the ring.
    pub(crate) fn record_delivery_with(
        &self,
        kind: &'static str,
        summary: impl FnOnce() -> String,
    ) {
        if self.entry.record {
            self.entry.depth.fetch_sub(1, Ordering::Relaxed);
            self.record_message_with(kind, summary);
        }
    }

    /// Counts one handled message and keeps it in the ring.
    pub fn record_message(&self, kind: &'static str, summary: String) {
        self.record_message_with(kind, || summary);
    }

    /// Like [`Probe::record_message`], but builds the summary only when the ring
    /// keeps messages, so a hot path pays nothing for it when recording is off.
    pub fn record_message_with(&self, kind: &'static str, summary: impl FnOnce() -> String) {
        if !self.entry.record {
            return;
        }
        let seq = self.entry.messages_handled.fetch_add(1, Ordering::Relaxed) + 1;
        let mut ring = self.entry.ring.lock();
        if ring.keeps_messages() {
            ring.push(seq, kind, summary());
        }
    }
}

//! The live registry of every actor in a tree: what the admin endpoint and
//! `RuntimeHandle::tree` read.
//!
//! One [`Registry`] belongs to one runtime (not to the process), so several trees can
//! run side by side in one test binary. Actors write to their own entry through a
//! [`Probe`]; readers take a [`TreeSnapshot`].

mod entry;
mod ring;
mod snapshot;
mod state;

pub use entry::{Probe, Readiness};
pub use ring::MessageRecord;
pub use snapshot::{ActorSnapshot, Serving, TreeSnapshot};
pub use state::{ActorKind, ActorState, Failure};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use entry::Entry;

/// How many recent messages each actor keeps unless configured otherwise.
pub const DEFAULT_RING_CAPACITY: usize = 64;

/// The set of actors of one runtime, keyed by their unique name.
#[derive(Clone, Debug)]
pub struct Registry {
    entries: Arc<RwLock<BTreeMap<String, Arc<Entry>>>>,
    ring_capacity: Arc<AtomicUsize>,
    record: Arc<AtomicBool>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(DEFAULT_RING_CAPACITY)
    }
}

/// Registering a name twice is a bug in the tree's specification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an actor named `{0}` is already registered")]
pub struct DuplicateName(pub String);

impl Registry {
    /// A registry whose actors each keep their `ring_capacity` most recent messages
    /// (0 turns message recording off; counters still run).
    pub fn new(ring_capacity: usize) -> Self {
        Self {
            entries: Arc::default(),
            ring_capacity: Arc::new(AtomicUsize::new(ring_capacity)),
            record: Arc::new(AtomicBool::new(true)),
        }
    }

    /// How many recent messages actors registered from now on keep.
    pub fn set_ring_capacity(&self, ring_capacity: usize) {
        self.ring_capacity.store(ring_capacity, Ordering::Relaxed);
    }

    /// Whether actors registered from now on count their messages and mailbox
    /// depth and keep them in the ring. On by default; off only to measure what
    /// inspection costs the data path.
    pub fn set_recording(&self, record: bool) {
        self.record.store(record, Ordering::Relaxed);
    }

    /// Adds an actor and returns the probe it reports through.
    pub fn register(
        &self,
        name: &str,
        kind: ActorKind,
        parent: Option<&str>,
    ) -> Result<Probe, DuplicateName> {
        let mut entries = self.entries.write();
        if entries.contains_key(name) {
            return Err(DuplicateName(name.to_owned()));
        }
        let entry = Arc::new(Entry::new(
            name,
            kind,
            parent.map(str::to_owned),
            self.ring_capacity.load(Ordering::Relaxed),
            self.record.load(Ordering::Relaxed),
        ));
        entries.insert(name.to_owned(), Arc::clone(&entry));
        Ok(Probe::new(entry))
    }

    /// The probe of an already registered actor.
    pub fn probe(&self, name: &str) -> Option<Probe> {
        self.entries.read().get(name).cloned().map(Probe::new)
    }

    /// The live incarnation of `name`, if it is running.
    pub fn cell(&self, name: &str) -> Option<ractor::ActorCell> {
        self.entries.read().get(name).and_then(|e| e.cell())
    }

    /// Whether `name` says it can serve, as a watch that lasts across its
    /// incarnations (see [`Probe::set_ready`]); `None` for an unknown name.
    pub fn ready(&self, name: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.entries.read().get(name).map(|e| e.ready())
    }

    /// A consistent-enough copy of every entry, ordered by registration.
    pub fn snapshot(&self) -> TreeSnapshot {
        let entries = self.entries.read();
        let mut actors: Vec<ActorSnapshot> = entries.values().map(|e| e.snapshot()).collect();
        actors.sort_by_key(|a| a.order);
        TreeSnapshot { actors }
    }

    /// The messages of one actor recorded after `seq`, oldest first.
    pub fn messages_after(&self, name: &str, seq: u64) -> Option<Vec<MessageRecord>> {
        self.entries.read().get(name).map(|e| e.messages_after(seq))
    }

    /// The `limit` most recent messages of one actor, oldest first.
    pub fn messages(&self, name: &str, limit: usize) -> Option<Vec<MessageRecord>> {
        self.entries
            .read()
            .get(name)
            .map(|e| e.recent_messages(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_registry_not_per_process() {
        let a = Registry::default();
        let b = Registry::default();
        a.register("pg", ActorKind::Resource, Some("root")).unwrap();
        b.register("pg", ActorKind::Resource, Some("root")).unwrap();
        assert_eq!(
            a.register("pg", ActorKind::Worker, None).unwrap_err(),
            DuplicateName("pg".into())
        );
    }

    #[test]
    fn snapshot_keeps_registration_order() {
        let r = Registry::default();
        for name in ["root", "redis", "pg", "receiver"] {
            r.register(name, ActorKind::Worker, None).unwrap();
        }
        let names: Vec<_> = r.snapshot().actors.into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["root", "redis", "pg", "receiver"]);
    }

    #[test]
    fn recorded_messages_are_bounded_and_newest_last() {
        let r = Registry::new(3);
        let probe = r.register("w", ActorKind::Worker, None).unwrap();
        for i in 0..5 {
            probe.record_message("Tick", format!("tick {i}"));
        }
        let messages = r.messages("w", 10).unwrap();
        let summaries: Vec<_> = messages.iter().map(|m| m.summary.as_str()).collect();
        assert_eq!(summaries, ["tick 2", "tick 3", "tick 4"]);
        assert_eq!(r.snapshot().actors[0].messages_handled, 5);
        assert_eq!(r.messages("w", 1).unwrap()[0].summary, "tick 4");
    }

    #[test]
    fn a_zero_capacity_ring_still_counts() {
        let r = Registry::new(0);
        let probe = r.register("w", ActorKind::Worker, None).unwrap();
        probe.record_message("Tick", "t".into());
        assert!(r.messages("w", 10).unwrap().is_empty());
        assert_eq!(r.snapshot().actors[0].messages_handled, 1);
    }
}

//! What a stream consumer counts, as the registry shows it and `/metrics`
//! exports it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use keel_core::stats::{Family, Samples, Stats};

const WRITTEN: Family = Family::counter(
    "keel_consumer_rows_written_total",
    "Rows a stream consumer wrote (new rows only).",
);
const DUPLICATES: Family = Family::counter(
    "keel_consumer_duplicates_total",
    "Entries whose rows were already stored.",
);
const DEAD: Family = Family::counter(
    "keel_consumer_dead_lettered_total",
    "Entries sent to the dead-letter stream.",
);
const LAG: Family = Family::gauge(
    "keel_consumer_group_lag_entries",
    "Stream entries not yet delivered to the consumer's group (absent when Redis cannot tell).",
);
const PENDING: Family = Family::gauge(
    "keel_consumer_group_pending_entries",
    "Entries delivered to the consumer's group and not acknowledged yet.",
);

const OLDEST_PENDING: Family = Family::gauge(
    "keel_consumer_oldest_pending_age_seconds",
    "Age of the oldest entry delivered to the consumer's group and not acknowledged (0: none pending).",
);

/// A consumer's counters (the `distributor` or `analyzer` detail).
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) stored: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
}

#[derive(Serialize)]
struct CountsFigures {
    stored: u64,
    duplicates: u64,
    dead_lettered: u64,
}

impl Counts {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn figures(&self) -> CountsFigures {
        CountsFigures {
            stored: self.stored.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

impl Stats for Counts {
    fn show(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.figures()).ok()
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        let f = self.figures();
        let labels = [("actor", actor)];
        out.add(&WRITTEN, &labels, f.stored as f64);
        out.add(&DUPLICATES, &labels, f.duplicates as f64);
        out.add(&DEAD, &labels, f.dead_lettered as f64);
    }
}

/// One stream's progress for the consumer's group.
#[derive(Clone, Debug, Serialize)]
pub(super) struct StreamFigures {
    pub(super) lag: Option<u64>,
    pub(super) pending: u64,
    pub(super) oldest_pending: Option<String>,
    pub(super) last_delivered: String,
}

/// How far behind the consumer's group is (the `group_progress` detail), in
/// total and per stream; `lag` is `None` where Redis cannot tell.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct Progress {
    pub(super) lag: Option<u64>,
    pub(super) pending: u64,
    pub(super) streams: BTreeMap<String, StreamFigures>,
}

impl Progress {
    /// When the oldest pending entry of any stream was added (a stream entry's
    /// id starts with its Unix time in milliseconds).
    fn oldest_pending_ms(&self) -> Option<u64> {
        self.streams
            .values()
            .filter_map(|s| s.oldest_pending.as_deref())
            .filter_map(|id| id.split_once('-')?.0.parse::<u64>().ok())
            .min()
    }
}

/// The latest [`Progress`] read, shared with the registry.
#[derive(Debug, Default)]
pub(super) struct ProgressStats(pub(super) Mutex<Option<Progress>>);

impl Stats for ProgressStats {
    fn show(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.0.lock().as_ref()?).ok()
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        let Some(progress) = self.0.lock().clone() else {
            return;
        };
        let labels = [("actor", actor)];
        if let Some(lag) = progress.lag {
            out.add(&LAG, &labels, lag as f64);
        }
        out.add(&PENDING, &labels, progress.pending as f64);
        let age = progress.oldest_pending_ms().map_or(0.0, |added| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            now.saturating_sub(added) as f64 / 1000.0
        });
        out.add(&OLDEST_PENDING, &labels, age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(oldest_pending: Option<&str>) -> StreamFigures {
        StreamFigures {
            lag: Some(0),
            pending: u64::from(oldest_pending.is_some()),
            oldest_pending: oldest_pending.map(str::to_owned),
            last_delivered: "0-0".to_owned(),
        }
    }

    #[test]
    fn the_oldest_pending_entry_is_the_earliest_id_of_any_stream() {
        let mut progress = Progress::default();
        assert_eq!(progress.oldest_pending_ms(), None);
        progress
            .streams
            .insert("a".into(), stream(Some("1700000005000-3")));
        progress
            .streams
            .insert("b".into(), stream(Some("1700000001000-0")));
        progress.streams.insert("c".into(), stream(None));
        assert_eq!(progress.oldest_pending_ms(), Some(1_700_000_001_000));
    }
}

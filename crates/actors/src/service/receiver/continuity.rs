//! Per-instrument sequence tracking: which trades are new, which are repeats,
//! and which ranges went missing.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use rustc_hash::FxHashMap;

use keel_market::Gap;

/// The last `trade_seq` seen per instrument. Shared by the receiver's
/// incarnations in one process, so a restart still sees the gap it caused.
/// Looked up for every trade, with a hash made for short keys (the names are
/// the exchange's, and a process follows a few thousand at most).
#[derive(Clone, Debug, Default)]
pub struct Continuity(Arc<Mutex<FxHashMap<String, i64>>>);

/// What to do with one trade.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The next one: forward it.
    Next,
    /// Already seen (a resubscribe re-sent it): forward it anyway, storage is
    /// idempotent, but it moves nothing.
    Repeat,
    /// New, after a hole: forward it and record the hole.
    After(Gap),
}

impl Continuity {
    /// Sets the baseline for an instrument not seen yet in this process (from
    /// the newest entry of its stream).
    pub(super) fn seed(&self, instrument: &str, last_seq: i64) {
        self.0
            .lock()
            .entry(instrument.to_owned())
            .or_insert(last_seq);
    }

    /// Starts an instrument over from `last_seq` (the newest entry of its
    /// stream, written by another instance), or from its next trade when the
    /// stream is empty: what this instance saw of it before no longer counts.
    pub(crate) fn restart_from(&self, instrument: &str, last_seq: Option<i64>) {
        let mut last = self.0.lock();
        match last_seq {
            Some(seq) => {
                last.insert(instrument.to_owned(), seq);
            }
            None => {
                last.remove(instrument);
            }
        }
    }

    /// Held for a frame's trades: one lock for all of them.
    pub(super) fn held(&self) -> Held<'_> {
        Held(self.0.lock())
    }
}

/// [`Continuity`] locked.
pub(super) struct Held<'a>(MutexGuard<'a, FxHashMap<String, i64>>);

impl Held<'_> {
    /// The last `trade_seq` seen for `instrument`.
    pub(super) fn last(&self, instrument: &str) -> Option<i64> {
        self.0.get(instrument).copied()
    }

    pub(super) fn check(&mut self, instrument: &str, seq: i64) -> Verdict {
        let last = &mut self.0;
        match last.get_mut(instrument) {
            None => {
                last.insert(instrument.to_owned(), seq);
                Verdict::Next
            }
            Some(prev) if seq <= *prev => Verdict::Repeat,
            Some(prev) if seq == *prev + 1 => {
                *prev = seq;
                Verdict::Next
            }
            Some(prev) => {
                let gap = Gap {
                    instrument_name: instrument.to_owned(),
                    from_seq: *prev + 1,
                    to_seq: seq - 1,
                };
                *prev = seq;
                Verdict::After(gap)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_repeat_and_holes() {
        let c = Continuity::default();
        assert_eq!(
            c.held().check("X", 5),
            Verdict::Next,
            "the first sets the baseline"
        );
        assert_eq!(c.held().check("X", 6), Verdict::Next);
        assert_eq!(c.held().check("X", 6), Verdict::Repeat);
        assert_eq!(c.held().check("X", 3), Verdict::Repeat);
        assert_eq!(
            c.held().check("X", 10),
            Verdict::After(Gap {
                instrument_name: "X".into(),
                from_seq: 7,
                to_seq: 9
            })
        );
        assert_eq!(c.held().check("X", 11), Verdict::Next);
        assert_eq!(
            c.held().check("Y", 1),
            Verdict::Next,
            "instruments are independent"
        );
    }

    #[test]
    fn a_seeded_baseline_exposes_the_hole_across_a_restart() {
        let c = Continuity::default();
        c.seed("X", 100);
        c.seed("X", 1); // an existing baseline wins
        assert_eq!(
            c.held().check("X", 150),
            Verdict::After(Gap {
                instrument_name: "X".into(),
                from_seq: 101,
                to_seq: 149
            })
        );
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever order trades arrive in (repeats, reorderings, jumps), the
        /// trades forwarded as new and the gaps recorded together cover every
        /// `trade_seq` from the first to the highest exactly once, and no trade
        /// is forwarded as new twice.
        #[test]
        fn new_trades_and_recorded_gaps_cover_the_range_exactly_once(
            seqs in prop::collection::vec(1i64..300, 1..200)
        ) {
            let c = Continuity::default();
            let mut new = Vec::new();
            let mut missing = Vec::new();
            for &seq in &seqs {
                match c.held().check("X", seq) {
                    Verdict::Next => new.push(seq),
                    Verdict::Repeat => {}
                    Verdict::After(gap) => {
                        prop_assert!(!gap.is_empty());
                        prop_assert_eq!(gap.to_seq + 1, seq);
                        missing.extend(gap.from_seq..=gap.to_seq);
                        new.push(seq);
                    }
                }
            }
            let first = seqs[0];
            let high = seqs.iter().copied().max().unwrap_or(first);
            let mut all: Vec<i64> = new.iter().chain(&missing).copied().collect();
            all.sort_unstable();
            let expected: Vec<i64> = (first..=high).collect();
            // Below the first trade nothing is known; above it, each once.
            let above: Vec<i64> = all.iter().copied().filter(|s| *s >= first).collect();
            prop_assert_eq!(above, expected);
            prop_assert_eq!(c.held().last("X"), Some(high));
            let unique: BTreeSet<i64> = new.iter().copied().collect();
            prop_assert_eq!(unique.len(), new.len(), "no trade is new twice");
        }
    }
}

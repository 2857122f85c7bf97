//! Per-instrument sequence tracking: which trades are new, which are repeats,
//! and which ranges went missing.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::market::Gap;

/// The last `trade_seq` seen per instrument. Shared by the receiver's
/// incarnations in one process, so a restart still sees the gap it caused.
#[derive(Clone, Debug, Default)]
pub struct Continuity(Arc<Mutex<HashMap<String, i64>>>);

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

    /// The last `trade_seq` seen for `instrument`.
    pub(super) fn last(&self, instrument: &str) -> Option<i64> {
        self.0.lock().get(instrument).copied()
    }

    pub(super) fn check(&self, instrument: &str, seq: i64) -> Verdict {
        let mut last = self.0.lock();
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
            c.check("X", 5),
            Verdict::Next,
            "the first sets the baseline"
        );
        assert_eq!(c.check("X", 6), Verdict::Next);
        assert_eq!(c.check("X", 6), Verdict::Repeat);
        assert_eq!(c.check("X", 3), Verdict::Repeat);
        assert_eq!(
            c.check("X", 10),
            Verdict::After(Gap {
                instrument_name: "X".into(),
                from_seq: 7,
                to_seq: 9
            })
        );
        assert_eq!(c.check("X", 11), Verdict::Next);
        assert_eq!(
            c.check("Y", 1),
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
            c.check("X", 150),
            Verdict::After(Gap {
                instrument_name: "X".into(),
                from_seq: 101,
                to_seq: 149
            })
        );
    }
}

//! What the read loop hands to the publisher: a bounded queue it never waits
//! on. When Redis is unreachable entries pile up to the limit; beyond it the
//! oldest are dropped and their ranges become gaps.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::market::Gap;
use crate::resource::redis::Fields;

/// One trade on its way to Redis.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) instrument: String,
    pub(super) seq: i64,
    pub(super) fields: Fields,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Pending>,
    gaps: Vec<Gap>,
    dropped: u64,
}

/// The queue between the read loop and the publisher.
#[derive(Debug)]
pub(super) struct Outbox {
    inner: Mutex<Inner>,
    limit: usize,
    pub(super) ready: Notify,
}

impl Outbox {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::default(),
            limit,
            ready: Notify::new(),
        }
    }

    /// Adds entries and gaps; never waits. Returns how many old entries were dropped.
    pub(super) fn push(&self, entries: Vec<Pending>, gaps: Vec<Gap>) -> usize {
        let mut inner = self.inner.lock();
        inner.entries.extend(entries);
        inner.gaps.extend(gaps);
        let mut dropped = 0;
        while inner.entries.len() > self.limit {
            if let Some(old) = inner.entries.pop_front() {
                add_to_gaps(&mut inner.gaps, &old.instrument, old.seq);
                dropped += 1;
            }
        }
        inner.dropped += dropped as u64;
        drop(inner);
        self.ready.notify_one();
        dropped
    }

    /// Up to `max` entries, oldest first.
    pub(super) fn take(&self, max: usize) -> Vec<Pending> {
        let mut inner = self.inner.lock();
        let n = max.min(inner.entries.len());
        inner.entries.drain(..n).collect()
    }

    /// Puts a batch that could not be written back at the front.
    pub(super) fn put_back(&self, batch: Vec<Pending>) {
        let mut inner = self.inner.lock();
        for entry in batch.into_iter().rev() {
            inner.entries.push_front(entry);
        }
        while inner.entries.len() > self.limit {
            if let Some(old) = inner.entries.pop_front() {
                add_to_gaps(&mut inner.gaps, &old.instrument, old.seq);
                inner.dropped += 1;
            }
        }
    }

    pub(super) fn take_gaps(&self) -> Vec<Gap> {
        std::mem::take(&mut self.inner.lock().gaps)
    }

    pub(super) fn put_back_gaps(&self, gaps: Vec<Gap>) {
        self.inner.lock().gaps.extend(gaps);
    }

    pub(super) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub(super) fn dropped(&self) -> u64 {
        self.inner.lock().dropped
    }

    /// Everything still held, as gaps (for a shutdown that cannot flush).
    pub(super) fn drain_as_gaps(&self) -> Vec<Gap> {
        let mut inner = self.inner.lock();
        let entries: Vec<Pending> = inner.entries.drain(..).collect();
        for e in entries {
            add_to_gaps(&mut inner.gaps, &e.instrument, e.seq);
        }
        std::mem::take(&mut inner.gaps)
    }
}

/// Extends the instrument's last gap when `seq` follows it, else opens a new one.
fn add_to_gaps(gaps: &mut Vec<Gap>, instrument: &str, seq: i64) {
    if let Some(last) = gaps
        .iter_mut()
        .rev()
        .find(|g| g.instrument_name == instrument)
    {
        if last.to_seq + 1 == seq {
            last.to_seq = seq;
            return;
        }
    }
    gaps.push(Gap {
        instrument_name: instrument.to_owned(),
        from_seq: seq,
        to_seq: seq,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(instrument: &str, seq: i64) -> Pending {
        Pending {
            instrument: instrument.into(),
            seq,
            fields: Vec::new(),
        }
    }

    #[test]
    fn over_the_limit_the_oldest_become_gaps() {
        let outbox = Outbox::new(3);
        let entries = (1..=5)
            .map(|s| pending("X", s))
            .chain([pending("Y", 9)])
            .collect();
        assert_eq!(outbox.push(entries, Vec::new()), 3);
        assert_eq!(outbox.len(), 3);
        assert_eq!(
            outbox.take_gaps(),
            [Gap {
                instrument_name: "X".into(),
                from_seq: 1,
                to_seq: 3
            }]
        );
        let kept: Vec<i64> = outbox.take(10).iter().map(|p| p.seq).collect();
        assert_eq!(kept, [4, 5, 9]);
    }

    #[test]
    fn a_batch_put_back_keeps_its_order_in_front() {
        let outbox = Outbox::new(10);
        outbox.push((1..=4).map(|s| pending("X", s)).collect(), Vec::new());
        let batch = outbox.take(2);
        outbox.push(vec![pending("X", 5)], Vec::new());
        outbox.put_back(batch);
        let seqs: Vec<i64> = outbox.take(10).iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }
}

//! What the read loop hands to the publisher: a bounded queue it never waits
//! on. When Redis is unreachable entries pile up to the limits (entries and
//! bytes); beyond either the oldest are dropped and their ranges become gaps.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use keel_market::Gap;

/// One trade on its way to Redis: the exchange's JSON text for it.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    /// Shared by the trades of a frame.
    pub(super) instrument: Arc<str>,
    pub(super) seq: i64,
    /// The trade's text, a slice of the frame it came in (not a copy).
    pub(super) text: Bytes,
}

/// What one entry is counted as against the byte limit besides its payload: the
/// struct, the deque slot and allocator headers, roughly.
const ENTRY_OVERHEAD: usize = 96;

impl Pending {
    fn size(&self) -> usize {
        ENTRY_OVERHEAD + self.instrument.len() + self.text.len()
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Pending>,
    /// Sum of `Pending::size` over `entries`.
    bytes: usize,
    gaps: Vec<Gap>,
    dropped: u64,
}

impl Inner {
    /// Drops the oldest entries until both limits hold; each becomes part of a gap.
    fn evict_over(&mut self, limit: usize, limit_bytes: usize) -> usize {
        let mut dropped = 0;
        while self.entries.len() > limit || self.bytes > limit_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.size();
            add_to_gaps(&mut self.gaps, &old.instrument, old.seq);
            dropped += 1;
        }
        self.dropped += dropped as u64;
        dropped
    }
}

/// The queue between the read loop and the publisher.
#[derive(Debug)]
pub(super) struct Outbox {
    inner: Mutex<Inner>,
    limit: usize,
    limit_bytes: usize,
    pub(super) ready: Notify,
}

impl Outbox {
    pub(super) fn new(limit: usize, limit_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            limit,
            limit_bytes,
            ready: Notify::new(),
        }
    }

    /// Adds entries and gaps; never waits. Returns how many old entries were dropped.
    pub(super) fn push(&self, entries: Vec<Pending>, gaps: Vec<Gap>) -> usize {
        let mut inner = self.inner.lock();
        inner.bytes += entries.iter().map(Pending::size).sum::<usize>();
        inner.entries.extend(entries);
        inner.gaps.extend(gaps);
        let dropped = inner.evict_over(self.limit, self.limit_bytes);
        drop(inner);
        self.ready.notify_one();
        dropped
    }

    /// Up to `max` entries, oldest first.
    pub(super) fn take(&self, max: usize) -> Vec<Pending> {
        let mut inner = self.inner.lock();
        let n = max.min(inner.entries.len());
        let taken: Vec<Pending> = inner.entries.drain(..n).collect();
        inner.bytes -= taken.iter().map(Pending::size).sum::<usize>();
        taken
    }

    /// Puts a batch that could not be written back at the front.
    pub(super) fn put_back(&self, batch: Vec<Pending>) {
        let mut inner = self.inner.lock();
        inner.bytes += batch.iter().map(Pending::size).sum::<usize>();
        for entry in batch.into_iter().rev() {
            inner.entries.push_front(entry);
        }
        inner.evict_over(self.limit, self.limit_bytes);
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
        inner.bytes = 0;
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
            text: Bytes::new(),
        }
    }

    #[test]
    fn over_the_limit_the_oldest_become_gaps() {
        let outbox = Outbox::new(3, usize::MAX);
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
        let outbox = Outbox::new(10, usize::MAX);
        outbox.push((1..=4).map(|s| pending("X", s)).collect(), Vec::new());
        let batch = outbox.take(2);
        outbox.push(vec![pending("X", 5)], Vec::new());
        outbox.put_back(batch);
        let seqs: Vec<i64> = outbox.take(10).iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn over_the_byte_limit_the_oldest_become_gaps_too() {
        let big = |seq: i64| Pending {
            instrument: "X".into(),
            seq,
            text: vec![0; 1000].into(),
        };
        let one = big(0).size();
        // Room for three entries by count ten times over, but bytes for two.
        let outbox = Outbox::new(30, 2 * one + one / 2);
        assert_eq!(outbox.push((1..=3).map(big).collect(), Vec::new()), 1);
        let gaps = outbox.take_gaps();
        assert_eq!((gaps[0].from_seq, gaps[0].to_seq), (1, 1));
        // Taking frees the bytes: two more fit again after two are taken.
        assert_eq!(outbox.take(2).len(), 2);
        assert_eq!(outbox.push((4..=5).map(big).collect(), Vec::new()), 0);
        let seqs: Vec<i64> = outbox.take(10).iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [4, 5]);
    }
}

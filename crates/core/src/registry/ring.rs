//! The bounded ring of an actor's most recent messages.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde::Serialize;

/// Longest summary kept; longer ones are cut so one message cannot bloat the ring.
const MAX_SUMMARY_CHARS: usize = 240;

/// One handled message as the operator sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MessageRecord {
    /// Its number among the messages the actor handled (1 = the first), so a
    /// follower can ask for what came after the last one it saw.
    pub seq: u64,
    /// When the actor started handling it.
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    /// The message's type (for enums, the variant).
    pub kind: &'static str,
    /// A short description written by the message's author; never a secret.
    pub summary: String,
}

#[derive(Debug)]
pub(super) struct Ring {
    capacity: usize,
    records: VecDeque<MessageRecord>,
}

impl Ring {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            records: VecDeque::with_capacity(capacity.min(1024)),
        }
    }

    pub(super) fn keeps_messages(&self) -> bool {
        self.capacity > 0
    }

    pub(super) fn push(&mut self, seq: u64, kind: &'static str, mut summary: String) {
        if self.capacity == 0 {
            return;
        }
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        if let Some((cut, _)) = summary.char_indices().nth(MAX_SUMMARY_CHARS) {
            summary.truncate(cut);
            summary.push('…');
        }
        self.records.push_back(MessageRecord {
            seq,
            at: SystemTime::now(),
            kind,
            summary,
        });
    }

    pub(super) fn after(&self, seq: u64) -> Vec<MessageRecord> {
        self.records
            .iter()
            .filter(|r| r.seq > seq)
            .cloned()
            .collect()
    }

    pub(super) fn latest(&self, limit: usize) -> Vec<MessageRecord> {
        let skip = self.records.len().saturating_sub(limit);
        self.records.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_summaries_are_cut_on_a_char_boundary() {
        let mut ring = Ring::new(2);
        ring.push(1, "Frame", "é".repeat(1000));
        let kept = &ring.latest(1)[0].summary;
        assert_eq!(kept.chars().count(), MAX_SUMMARY_CHARS + 1);
        assert!(kept.ends_with('…'));
    }
}

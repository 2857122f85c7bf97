//! A range of trades known to be missing.

use serde::{Deserialize, Serialize};

/// Trades `from_seq..=to_seq` of one instrument were not delivered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Gap {
    /// The instrument whose `trade_seq` has the hole.
    pub instrument_name: String,
    /// First missing `trade_seq`.
    pub from_seq: i64,
    /// Last missing `trade_seq`.
    pub to_seq: i64,
}

impl Gap {
    /// How many trades are missing.
    pub fn len(&self) -> i64 {
        self.to_seq - self.from_seq + 1
    }

    /// Never true: a gap holds at least one trade.
    pub fn is_empty(&self) -> bool {
        self.len() <= 0
    }
}

/// The same missing trades as `gaps`, as few gaps as possible: sorted by
/// instrument and start, none overlapping or touching another of its
/// instrument. Empty (inverted) gaps are dropped.
pub fn merge(mut gaps: Vec<Gap>) -> Vec<Gap> {
    gaps.retain(|g| !g.is_empty());
    gaps.sort();
    let mut merged: Vec<Gap> = Vec::with_capacity(gaps.len());
    for gap in gaps {
        match merged.last_mut() {
            Some(last)
                if last.instrument_name == gap.instrument_name
                    && gap.from_seq <= last.to_seq.saturating_add(1) =>
            {
                last.to_seq = last.to_seq.max(gap.to_seq);
            }
            _ => merged.push(gap),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn gap(instrument: &str, from_seq: i64, to_seq: i64) -> Gap {
        Gap {
            instrument_name: instrument.into(),
            from_seq,
            to_seq,
        }
    }

    fn covered(gaps: &[Gap]) -> BTreeSet<(String, i64)> {
        gaps.iter()
            .flat_map(|g| (g.from_seq..=g.to_seq).map(move |s| (g.instrument_name.clone(), s)))
            .collect()
    }

    fn gaps() -> impl Strategy<Value = Vec<Gap>> {
        prop::collection::vec(
            (prop::sample::select(vec!["A", "B"]), 0i64..200, -5i64..40)
                .prop_map(|(i, from, len)| gap(i, from, from + len)),
            0..30,
        )
    }

    proptest! {
        #[test]
        fn merging_keeps_exactly_the_missing_trades_in_disjoint_sorted_gaps(input in gaps()) {
            let merged = merge(input.clone());
            prop_assert_eq!(covered(&merged), covered(&input));
            for pair in merged.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                prop_assert!(!a.is_empty());
                if a.instrument_name == b.instrument_name {
                    prop_assert!(a.to_seq + 1 < b.from_seq, "{:?} and {:?} touch", a, b);
                } else {
                    prop_assert!(a.instrument_name < b.instrument_name);
                }
            }
            prop_assert_eq!(merge(merged.clone()), merged, "merging is idempotent");
        }
    }

    #[test]
    fn touching_and_nested_gaps_become_one() {
        let merged = merge(vec![
            gap("A", 5, 9),
            gap("A", 10, 12),
            gap("A", 6, 7),
            gap("B", 1, 1),
            gap("A", 20, 19),
        ]);
        assert_eq!(merged, [gap("A", 5, 12), gap("B", 1, 1)]);
    }
}

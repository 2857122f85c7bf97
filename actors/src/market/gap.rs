//! A range of trades known to be missing.

use serde::{Deserialize, Serialize};

/// Trades `from_seq..=to_seq` of one instrument were not delivered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Gap {
    /// The instrument.
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

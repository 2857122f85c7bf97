//! How trades travel through Redis: one stream per instrument, one entry per
//! trade, the exchange's JSON for the trade in field `t`.

use crate::resource::redis::{Fields, StreamEntry};
use crate::service::receiver::{check_values, Rejection};
use keel_deribit::model::{BadTrade, PublicTrade};
use keel_market::Trade;

/// The field holding a trade's JSON.
pub const TRADE_FIELD: &str = "t";

/// `trades:{instrument}`.
pub fn trade_stream(instrument: &str) -> String {
    format!("trades:{instrument}")
}

/// Where entries that cannot be stored go, with the reason.
pub const DEAD_LETTER_STREAM: &str = "trades:dead";

/// One trade as a stream entry.
pub fn encode(trade: &PublicTrade) -> Result<Fields, serde_json::Error> {
    let json = serde_json::to_vec(trade)?;
    Ok(vec![(TRADE_FIELD.to_owned(), json)])
}

/// One trade as a stream entry, from the exchange's own text for it (what the
/// receiver publishes: `decode` reads it as it reads [`encode`]'s).
pub fn encode_text(text: &str) -> Fields {
    vec![(TRADE_FIELD.to_owned(), text.as_bytes().to_vec())]
}

/// Why a stream entry is not a trade Keel can store; the entry is dead-lettered
/// with this as its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// No trade field at all.
    #[error("entry {id} has no `{TRADE_FIELD}` field")]
    NoTrade {
        /// The entry's id.
        id: String,
    },
    /// The field is not a trade's JSON.
    #[error("entry {id}: not a trade: {cause}")]
    NotATrade {
        /// The entry's id.
        id: String,
        /// serde's message.
        cause: String,
    },
    /// A trade the receiver's edge checks would have refused.
    #[error("entry {id}: rejected: {}", reason.as_str())]
    Rejected {
        /// The entry's id.
        id: String,
        /// Which check.
        reason: Rejection,
    },
    /// A trade with a value Keel cannot store.
    #[error("entry {id}: {cause}")]
    Unstorable {
        /// The entry's id.
        id: String,
        /// What is wrong with it.
        cause: BadTrade,
    },
}

/// An entry back into a trade Keel can store.
pub fn decode(entry: &StreamEntry) -> Result<Trade, EntryError> {
    let id = || entry.id.clone();
    let raw = entry
        .field(TRADE_FIELD)
        .ok_or_else(|| EntryError::NoTrade { id: id() })?;
    let trade: PublicTrade = serde_json::from_slice(raw).map_err(|e| EntryError::NotATrade {
        id: id(),
        cause: e.to_string(),
    })?;
    // Entries other programs wrote get the checks the receiver applies.
    check_values(&trade).map_err(|reason| EntryError::Rejected { id: id(), reason })?;
    trade
        .into_trade()
        .map_err(|cause| EntryError::Unstorable { id: id(), cause })
}

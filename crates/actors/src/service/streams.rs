//! How trades travel through Redis: one stream per instrument, one entry per
//! trade, the exchange's JSON for the trade in field `t`.

use crate::resource::redis::{Fields, StreamEntry};
use keel_deribit::model::PublicTrade;
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

/// An entry back into a trade Keel can store.
pub fn decode(entry: &StreamEntry) -> Result<Trade, String> {
    let raw = entry
        .field(TRADE_FIELD)
        .ok_or_else(|| format!("entry {} has no `{TRADE_FIELD}` field", entry.id))?;
    let trade: PublicTrade =
        serde_json::from_slice(raw).map_err(|e| format!("entry {}: not a trade: {e}", entry.id))?;
    // Entries other programs wrote get the checks the receiver applies.
    crate::service::receiver::check_values(&trade)
        .map_err(|r| format!("entry {}: rejected: {}", entry.id, r.as_str()))?;
    trade
        .to_trade()
        .map_err(|e| format!("entry {}: {e}", entry.id))
}

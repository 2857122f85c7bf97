//! A tradable instrument.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// An instrument as listed by the exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instrument {
    /// Unique name, e.g. `BTC-PERPETUAL`, `BTC-27DEC24-60000-C`.
    pub instrument_name: String,
    /// `future`, `option`, `spot`, ...
    pub kind: String,
    /// e.g. `BTC`.
    pub base_currency: String,
    /// e.g. `USD`.
    pub quote_currency: String,
    /// Minimum price increment.
    pub tick_size: f64,
    /// What one contract is worth, in the amount's unit.
    pub contract_size: f64,
    /// Smallest tradable amount.
    pub min_trade_amount: f64,
    /// When it was listed.
    pub creation_timestamp: SystemTime,
    /// When it expires (far future for perpetuals).
    pub expiration_timestamp: SystemTime,
    /// Whether the exchange still lists it as active.
    pub is_active: bool,
    /// `call` / `put` for options.
    pub option_type: Option<String>,
    /// Strike for options.
    pub strike: Option<f64>,
}

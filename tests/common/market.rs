//! Sample market data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_market::{Candle, Direction, Instrument, Resolution, Trade};

pub fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub fn trades(instrument: &str, seqs: std::ops::Range<i64>) -> Vec<Trade> {
    seqs.map(|seq| Trade {
        instrument_name: instrument.to_owned(),
        trade_seq: seq,
        trade_id: format!("{instrument}-{seq}"),
        timestamp: at(1_700_000_000_000 + seq as u64 * 10),
        price: 50_000.0 + seq as f64 * 0.5,
        amount: 10.0 + (seq % 7) as f64,
        direction: if seq % 2 == 0 {
            Direction::Buy
        } else {
            Direction::Sell
        },
        tick_direction: (seq % 4) as i16,
        mark_price: Some(50_000.1),
        index_price: 49_999.9,
        iv: (seq % 3 == 0).then_some(55.5),
        liquidation: (seq % 5 == 0).then(|| "M".to_owned()),
        block_trade_id: None,
        combo_id: None,
        combo_trade_id: None,
    })
    .collect()
}

pub fn instrument(name: &str, active: bool) -> Instrument {
    Instrument {
        instrument_name: name.to_owned(),
        kind: "future".into(),
        base_currency: "BTC".into(),
        quote_currency: "USD".into(),
        tick_size: 0.5,
        contract_size: 10.0,
        min_trade_amount: 10.0,
        creation_timestamp: at(1_600_000_000_000),
        expiration_timestamp: at(32_503_680_000_000),
        is_active: active,
        option_type: None,
        strike: None,
    }
}

pub fn candle(instrument: &str, minute: u64, close: f64) -> Candle {
    Candle {
        instrument_name: instrument.to_owned(),
        resolution: Resolution::minutes(1).unwrap(),
        bucket: at(1_700_000_000_000 - 1_700_000_000_000 % 60_000 + minute * 60_000),
        open: 100.0,
        high: 110.0,
        low: 90.0,
        close,
        volume: 5.0,
        trades: 3,
    }
}

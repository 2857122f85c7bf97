//! The receiver's gate: every trade the exchange sends is checked against what
//! Keel subscribed to and against sane bounds before it can reach a stream.
//! What fails is counted by reason and kept in a bounded sample for the admin
//! API; it never reaches Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::FxHashSet;
use serde::Serialize;

use keel_deribit::model::TradeView;

/// The largest `trade_seq` believed: Deribit's run to around 10^8 after years.
const MAX_SEQ: i64 = 1_000_000_000_000_000;
/// How far ahead of this machine's clock a trade's time may be.
const MAX_AHEAD: Duration = Duration::from_secs(60);
/// Rejected trades kept for the admin API.
const SAMPLE: usize = 20;
/// How much of a rejected trade's JSON the sample keeps.
const SAMPLE_BYTES: usize = 512;
/// Longest id or name accepted.
const MAX_TEXT: usize = 128;

/// Why a trade was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Its instrument is not one Keel subscribed to.
    Unsubscribed,
    /// It came on another instrument's channel.
    WrongChannel,
    /// `trade_seq` not positive, or beyond any believable number.
    SeqOutOfRange,
    /// `trade_seq` far ahead of the last one and not confirmed by the next.
    SeqJump,
    /// Its time is too far in the past or the future.
    TimeOutOfWindow,
    /// A price, amount or volatility that is not a finite number.
    NotFinite,
    /// A price or amount of the wrong sign for the instrument.
    WrongSign,
    /// Text with a NUL byte or far too long.
    BadText,
    /// A direction other than `buy` or `sell`.
    BadDirection,
}

impl Rejection {
    /// Every reason, in the order counters are kept.
    pub const ALL: [Rejection; 9] = [
        Rejection::Unsubscribed,
        Rejection::WrongChannel,
        Rejection::SeqOutOfRange,
        Rejection::SeqJump,
        Rejection::TimeOutOfWindow,
        Rejection::NotFinite,
        Rejection::WrongSign,
        Rejection::BadText,
        Rejection::BadDirection,
    ];

    /// The name used in the registry and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unsubscribed => "unsubscribed",
            Rejection::WrongChannel => "wrong_channel",
            Rejection::SeqOutOfRange => "seq_out_of_range",
            Rejection::SeqJump => "seq_jump",
            Rejection::TimeOutOfWindow => "time_out_of_window",
            Rejection::NotFinite => "not_finite",
            Rejection::WrongSign => "wrong_sign",
            Rejection::BadText => "bad_text",
            Rejection::BadDirection => "bad_direction",
        }
    }

    fn index(self) -> usize {
        Rejection::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Checks that need no state: what any trade must be, wherever it came from
/// (also applied to stream entries other programs wrote).
pub fn check_values(trade: &TradeView<'_>) -> Result<(), Rejection> {
    if !(1..=MAX_SEQ).contains(&trade.trade_seq) {
        return Err(Rejection::SeqOutOfRange);
    }
    let texts = [
        Some(&*trade.instrument_name),
        Some(&*trade.trade_id),
        Some(&*trade.direction),
        trade.liquidation.as_deref(),
        trade.block_trade_id.as_deref(),
        trade.combo_id.as_deref(),
        trade.combo_trade_id.as_deref(),
    ];
    if trade.instrument_name.is_empty()
        || texts
            .into_iter()
            .flatten()
            .any(|t| t.len() > MAX_TEXT || t.contains('\0'))
    {
        return Err(Rejection::BadText);
    }
    if !matches!(&*trade.direction, "buy" | "sell") {
        return Err(Rejection::BadDirection);
    }
    let numbers = [
        Some(trade.price),
        Some(trade.amount),
        trade.mark_price,
        Some(trade.index_price),
        trade.iv,
        trade.contracts,
    ];
    if numbers.into_iter().flatten().any(|n| !n.is_finite()) {
        return Err(Rejection::NotFinite);
    }
    // A combo's price is a spread and may be zero or negative; nothing else's.
    // Combos name their structure second (`BTC-FS-29MAR24_PERP`,
    // `BTC-STRD-30SEP22-20000`, `BTC-CSR12-16SEP22-21000_23000`); futures and
    // options name a date, perpetuals `PERPETUAL`, spot pairs nothing.
    let combo = trade
        .instrument_name
        .split('-')
        .nth(1)
        .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_alphabetic()) && s != "PERPETUAL");
    if trade.amount <= 0.0 || (!combo && trade.price <= 0.0) || trade.iv.is_some_and(|v| v < 0.0) {
        return Err(Rejection::WrongSign);
    }
    Ok(())
}

/// One rejected trade, as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Rejected {
    /// Why.
    pub reason: Rejection,
    /// When it arrived (ms since the epoch).
    pub at_ms: u64,
    /// The channel it came on.
    pub channel: String,
    /// The start of its JSON.
    pub trade: String,
}

/// The gate, with its counters and sample; shared by the receiver's
/// incarnations' registry detail.
#[derive(Debug)]
pub(super) struct Gate {
    /// Asked of every trade: a hash made for short keys.
    subscribed: FxHashSet<String>,
    max_age: Duration,
    max_jump: i64,
    /// Per instrument, the `trade_seq` of a jump turned away: the next trade
    /// continuing it confirms the jump (the turned-away one falls into the
    /// recorded gap and is repaired from history, so nothing is lost).
    unconfirmed: Mutex<HashMap<String, i64>>,
    counts: [AtomicU64; Rejection::ALL.len()],
    sample: Mutex<VecDeque<Rejected>>,
}

impl Gate {
    pub(super) fn new(instruments: &[String], max_age: Duration, max_jump: i64) -> Self {
        Self {
            subscribed: instruments.iter().cloned().collect(),
            max_age,
            max_jump,
            unconfirmed: Mutex::default(),
            counts: Default::default(),
            sample: Mutex::default(),
        }
    }

    /// Checks one trade that came on `channel` (for `channel_instrument`),
    /// given the last `trade_seq` seen for its instrument and the time now.
    pub(super) fn check(
        &self,
        trade: &TradeView<'_>,
        channel_instrument: Option<&str>,
        last_seq: Option<i64>,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        if !self.subscribed.contains(&*trade.instrument_name) {
            return Err(Rejection::Unsubscribed);
        }
        if channel_instrument.is_some_and(|c| c != trade.instrument_name) {
            return Err(Rejection::WrongChannel);
        }
        check_values(trade)?;
        let oldest =
            now_ms.saturating_sub(u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX));
        let newest = now_ms.saturating_add(MAX_AHEAD.as_millis() as u64);
        if !(oldest..=newest).contains(&trade.timestamp) {
            return Err(Rejection::TimeOutOfWindow);
        }
        if let Some(last) = last_seq {
            if trade.trade_seq > last.saturating_add(self.max_jump) {
                let mut unconfirmed = self.unconfirmed.lock();
                let previous =
                    unconfirmed.insert(trade.instrument_name.clone().into_owned(), trade.trade_seq);
                if previous != Some(trade.trade_seq - 1) {
                    return Err(Rejection::SeqJump);
                }
            }
        }
        Ok(())
    }

    /// Counts a rejection and keeps it in the sample.
    pub(super) fn reject(&self, reason: Rejection, channel: &str, trade: &str, now_ms: u64) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
        let mut sample = self.sample.lock();
        if sample.len() == SAMPLE {
            sample.pop_front();
        }
        let mut end = trade.len().min(SAMPLE_BYTES);
        while !trade.is_char_boundary(end) {
            end -= 1;
        }
        sample.push_back(Rejected {
            reason,
            at_ms: now_ms,
            channel: channel.chars().take(MAX_TEXT).collect(),
            trade: trade[..end].to_owned(),
        });
    }

    /// Rejections by reason, for the registry and metrics.
    pub(super) fn counts(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for reason in Rejection::ALL {
            out.insert(reason.as_str().into(), self.count(reason).into());
        }
        out.into()
    }

    /// Trades rejected for `reason` so far.
    pub(super) fn count(&self, reason: Rejection) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// The most recent rejections.
    pub(super) fn sample(&self) -> serde_json::Value {
        serde_json::to_value(self.sample.lock().iter().collect::<Vec<_>>()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_deribit::model::PublicTrade;

    const NOW: u64 = 1_700_000_000_000;

    fn trade(seq: i64) -> PublicTrade {
        PublicTrade {
            trade_id: format!("id-{seq}"),
            ..PublicTrade::buy("BTC-PERPETUAL", seq, NOW, 50_000.0, 10.0)
        }
    }

    fn gate() -> Gate {
        Gate::new(
            &["BTC-PERPETUAL".into(), "BTC-FS-29MAR24_PERP".into()],
            Duration::from_secs(3600),
            1_000,
        )
    }

    #[test]
    fn good_trades_pass_and_each_kind_of_bad_one_is_named() {
        let g = gate();
        assert_eq!(
            g.check(&trade(5).view(), Some("BTC-PERPETUAL"), Some(4), NOW),
            Ok(())
        );
        let cases: Vec<(PublicTrade, Rejection)> = vec![
            (
                PublicTrade {
                    instrument_name: "DOGE-PERPETUAL".into(),
                    ..trade(5)
                },
                Rejection::Unsubscribed,
            ),
            (trade(0), Rejection::SeqOutOfRange),
            (trade(-3), Rejection::SeqOutOfRange),
            (trade(9_000_000_000_000_000_000), Rejection::SeqOutOfRange),
            (
                PublicTrade {
                    timestamp: 9_999_999_999_999_999,
                    ..trade(5)
                },
                Rejection::TimeOutOfWindow,
            ),
            (
                PublicTrade {
                    timestamp: u64::MAX,
                    ..trade(5)
                },
                Rejection::TimeOutOfWindow,
            ),
            (
                PublicTrade {
                    timestamp: NOW - 2 * 3_600_000,
                    ..trade(5)
                },
                Rejection::TimeOutOfWindow,
            ),
            (
                PublicTrade {
                    price: f64::NAN,
                    ..trade(5)
                },
                Rejection::NotFinite,
            ),
            (
                PublicTrade {
                    amount: f64::INFINITY,
                    ..trade(5)
                },
                Rejection::NotFinite,
            ),
            (
                PublicTrade {
                    price: -1.0,
                    ..trade(5)
                },
                Rejection::WrongSign,
            ),
            (
                PublicTrade {
                    amount: 0.0,
                    ..trade(5)
                },
                Rejection::WrongSign,
            ),
            (
                PublicTrade {
                    trade_id: "a\0b".into(),
                    ..trade(5)
                },
                Rejection::BadText,
            ),
            (
                PublicTrade {
                    direction: "sideways".into(),
                    ..trade(5)
                },
                Rejection::BadDirection,
            ),
        ];
        for (bad, reason) in cases {
            assert_eq!(
                g.check(
                    &bad.view(),
                    Some(&bad.instrument_name.clone()),
                    Some(4),
                    NOW
                ),
                Err(reason),
                "{bad:?}"
            );
        }
        // A BTC channel carrying an ETH... or another subscribed instrument's trade.
        let other = PublicTrade {
            instrument_name: "BTC-FS-29MAR24_PERP".into(),
            ..trade(5)
        };
        assert_eq!(
            g.check(&other.view(), Some("BTC-PERPETUAL"), None, NOW),
            Err(Rejection::WrongChannel)
        );
        // A combo's spread may be negative.
        let spread = PublicTrade {
            price: -12.5,
            ..other
        };
        assert_eq!(
            g.check(&spread.view(), Some("BTC-FS-29MAR24_PERP"), None, NOW),
            Ok(())
        );
    }

    #[test]
    fn a_lone_jump_is_turned_away_and_a_jump_the_next_trade_confirms_passes() {
        let g = gate();
        // One absurd number: turned away, and the next normal one passes.
        assert_eq!(
            g.check(&trade(900_000).view(), None, Some(10), NOW),
            Err(Rejection::SeqJump)
        );
        assert_eq!(g.check(&trade(11).view(), None, Some(10), NOW), Ok(()));
        // A real jump (a long outage): the second trade confirms it.
        assert_eq!(
            g.check(&trade(500_000).view(), None, Some(11), NOW),
            Err(Rejection::SeqJump)
        );
        assert_eq!(g.check(&trade(500_001).view(), None, Some(11), NOW), Ok(()));
    }

    #[test]
    fn rejections_are_counted_and_the_sample_is_bounded() {
        let g = gate();
        for i in 0..100 {
            g.reject(Rejection::BadText, "trades.X.raw", &"x".repeat(i * 10), NOW);
        }
        assert_eq!(g.counts()["bad_text"], 100);
        let sample = g.sample();
        assert_eq!(sample.as_array().map(Vec::len), Some(SAMPLE));
        assert!(sample[SAMPLE - 1]["trade"].as_str().unwrap().len() <= SAMPLE_BYTES);
    }
}

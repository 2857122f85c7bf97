//! One instrument's market: a random walk on its tick size that yields trades,
//! and an order book that yields changes. Trades and book changes come from
//! separate random streams, so each sequence depends only on the seed and the
//! instrument, never on timing or on how they interleave.

use std::collections::BTreeMap;

use super::catalog::Spec;
use super::rng::Rng;
use crate::model::{BookGrouped, BookUpdate, PublicTrade};

const BOOK_LEVELS: i64 = 10;

#[derive(Debug)]
struct Book {
    rng: Rng,
    mid: i64,
    bids: BTreeMap<i64, f64>,
    asks: BTreeMap<i64, f64>,
    change_id: i64,
}

/// One instrument's generator state.
#[derive(Debug)]
pub(super) struct Market {
    pub(super) spec: Spec,
    rng: Rng,
    price_ticks: i64,
    last_move_up: bool,
    /// Sequence number of the last trade generated (0 before the first).
    pub(super) trade_seq: i64,
    book: Book,
}

impl Market {
    pub(super) fn new(spec: Spec, seed: u64) -> Self {
        let name = spec.info.instrument_name.clone();
        let tick = spec.info.tick_size;
        let start = (spec.start_price / tick).round() as i64;
        let mut book = Book {
            rng: Rng::for_stream(seed, &format!("{name}/book")),
            mid: start,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            change_id: 1,
        };
        for level in 1..=BOOK_LEVELS {
            let bid = book.amount(&spec);
            let ask = book.amount(&spec);
            book.bids.insert(start - level, bid);
            book.asks.insert(start + level, ask);
        }
        Self {
            rng: Rng::for_stream(seed, &format!("{name}/trades")),
            price_ticks: start.max(1),
            last_move_up: true,
            trade_seq: 0,
            spec,
            book,
        }
    }

    fn price(&self, ticks: i64) -> f64 {
        round(ticks as f64 * self.spec.info.tick_size)
    }

    /// Moves the walk by `step` ticks (never below one tick); the trade's
    /// `tick_direction`: 0 up, 1 zero-plus, 2 down, 3 zero-minus.
    fn move_by(&mut self, step: i64) -> i16 {
        self.price_ticks = (self.price_ticks + step).max(1);
        let tick_direction = match step {
            s if s > 0 => 0,
            s if s < 0 => 2,
            _ if self.last_move_up => 1,
            _ => 3,
        };
        if step != 0 {
            self.last_move_up = step > 0;
        }
        tick_direction
    }

    /// The id of the trade numbered `trade_seq`.
    fn trade_id(&self) -> String {
        (self.spec.info.instrument_id.unwrap_or_default() * 1_000_000_000 + self.trade_seq as u64)
            .to_string()
    }

    /// The next trade, stamped `now_ms`.
    pub(super) fn next_trade(&mut self, now_ms: u64) -> PublicTrade {
        let step = self.rng.below(5) as i64 - 2;
        let tick_direction = self.move_by(step);
        let info = &self.spec.info;
        let lots = (1 + self.rng.below(20)) as f64;
        let amount = round(lots * info.min_trade_amount);
        let direction = if self.rng.below(2) == 0 {
            "buy"
        } else {
            "sell"
        };
        let price = self.price(self.price_ticks);
        let mark = round(price * (1.0 + (self.rng.unit() - 0.5) * 0.0004));
        let index = round(price * (1.0 + (self.rng.unit() - 0.5) * 0.0008));
        let option = info.kind == "option";
        let iv = option.then(|| round(50.0 + self.rng.unit() * 20.0));
        let liquidation = (self.rng.below(500) == 0).then(|| "T".to_owned());
        self.trade_seq += 1;
        PublicTrade {
            trade_seq: self.trade_seq,
            trade_id: self.trade_id(),
            timestamp: now_ms,
            tick_direction,
            price,
            mark_price: Some(mark),
            index_price: index,
            instrument_name: info.instrument_name.clone(),
            direction: direction.into(),
            amount,
            contracts: Some(round(amount / info.contract_size)),
            iv,
            liquidation,
            block_trade_id: None,
            combo_id: None,
            combo_trade_id: None,
        }
    }

    /// A trade of the account's order: the next `trade_seq`, at `price_ticks`,
    /// `taker` the side that took liquidity. Moves the walk to the price, as a
    /// trade does.
    pub(super) fn mint_trade(
        &mut self,
        now_ms: u64,
        price_ticks: i64,
        amount: f64,
        taker: &str,
    ) -> PublicTrade {
        let tick_direction = self.move_by(price_ticks - self.price_ticks);
        let info = &self.spec.info;
        let price = self.price(self.price_ticks);
        self.trade_seq += 1;
        PublicTrade {
            trade_seq: self.trade_seq,
            trade_id: self.trade_id(),
            timestamp: now_ms,
            tick_direction,
            price,
            mark_price: Some(price),
            index_price: price,
            instrument_name: info.instrument_name.clone(),
            direction: taker.into(),
            amount: round(amount),
            contracts: Some(round(amount / info.contract_size)),
            iv: (info.kind == "option").then_some(60.0),
            liquidation: None,
            block_trade_id: None,
            combo_id: None,
            combo_trade_id: None,
        }
    }

    /// The book's levels a taker on `side` (`true`: buying) can trade with
    /// up to `limit_ticks` (any price when `None`), best first: `(ticks, amount)`.
    pub(super) fn crossing(&self, buying: bool, limit_ticks: Option<i64>) -> Vec<(i64, f64)> {
        if buying {
            self.book
                .asks
                .iter()
                .take_while(|(p, _)| limit_ticks.is_none_or(|l| **p <= l))
                .map(|(p, a)| (*p, *a))
                .collect()
        } else {
            self.book
                .bids
                .iter()
                .rev()
                .take_while(|(p, _)| limit_ticks.is_none_or(|l| **p >= l))
                .map(|(p, a)| (*p, *a))
                .collect()
        }
    }

    /// The best bid and ask in ticks.
    pub(super) fn best_ticks(&self) -> (Option<i64>, Option<i64>) {
        (
            self.book.bids.keys().next_back().copied(),
            self.book.asks.keys().next().copied(),
        )
    }

    /// Applies the next book change and describes it.
    pub(super) fn next_book_change(&mut self, now_ms: u64) -> BookUpdate {
        let spec = &self.spec;
        let book = &mut self.book;
        let prev = book.change_id;
        book.change_id += 1;
        // The mid drifts now and then; levels move with it.
        if book.rng.below(8) == 0 {
            book.mid += book.rng.below(3) as i64 - 1;
        }
        let bid_side = book.rng.below(2) == 0;
        let distance = 1 + book.rng.below(BOOK_LEVELS as u64 + 2) as i64;
        let level = if bid_side {
            book.mid - distance
        } else {
            book.mid + distance
        };
        let amount = book.amount(spec);
        let side = if bid_side {
            &mut book.bids
        } else {
            &mut book.asks
        };
        let (action, amount) = match side.get(&level) {
            Some(_) if side.len() > 3 && book.rng.below(3) == 0 => {
                side.remove(&level);
                ("delete", 0.0)
            }
            Some(_) => {
                side.insert(level, amount);
                ("change", amount)
            }
            None => {
                side.insert(level, amount);
                ("new", amount)
            }
        };
        // A crossed book is not a book: drop what the move crossed.
        let mid = book.mid;
        book.bids.retain(|&p, _| p < mid);
        book.asks.retain(|&p, _| p > mid);
        let entry = vec![(
            action.to_owned(),
            round(level as f64 * spec.info.tick_size),
            amount,
        )];
        let (bids, asks) = if bid_side {
            (entry, Vec::new())
        } else {
            (Vec::new(), entry)
        };
        BookUpdate {
            kind: Some("change".into()),
            timestamp: now_ms,
            instrument_name: spec.info.instrument_name.clone(),
            change_id: book.change_id,
            prev_change_id: Some(prev),
            bids,
            asks,
        }
    }

    /// The whole book as a `snapshot` update.
    pub(super) fn book_snapshot(&self, now_ms: u64) -> BookUpdate {
        let level = |(p, a): (&i64, &f64)| ("new".to_owned(), self.price(*p), *a);
        BookUpdate {
            kind: Some("snapshot".into()),
            timestamp: now_ms,
            instrument_name: self.spec.info.instrument_name.clone(),
            change_id: self.book.change_id,
            prev_change_id: None,
            bids: self.book.bids.iter().rev().map(level).collect(),
            asks: self.book.asks.iter().map(level).collect(),
        }
    }

    /// The best `depth` levels per side.
    pub(super) fn grouped(&self, depth: usize, now_ms: u64) -> BookGrouped {
        BookGrouped {
            timestamp: now_ms,
            instrument_name: self.spec.info.instrument_name.clone(),
            change_id: self.book.change_id,
            bids: self
                .book
                .bids
                .iter()
                .rev()
                .take(depth)
                .map(|(p, a)| (self.price(*p), *a))
                .collect(),
            asks: self
                .book
                .asks
                .iter()
                .take(depth)
                .map(|(p, a)| (self.price(*p), *a))
                .collect(),
        }
    }

    /// Best bid and ask: `(bid, bid amount, ask, ask amount)`.
    pub(super) fn best(&self) -> (f64, f64, f64, f64) {
        let bid = self.book.bids.iter().next_back();
        let ask = self.book.asks.iter().next();
        (
            bid.map_or(0.0, |(p, _)| self.price(*p)),
            bid.map_or(0.0, |(_, a)| *a),
            ask.map_or(0.0, |(p, _)| self.price(*p)),
            ask.map_or(0.0, |(_, a)| *a),
        )
    }

    /// The price of the last trade (the walk's position).
    pub(super) fn last_price(&self) -> f64 {
        self.price(self.price_ticks)
    }
}

impl Book {
    fn amount(&mut self, spec: &Spec) -> f64 {
        round((1 + self.rng.below(50)) as f64 * spec.info.min_trade_amount)
    }
}

/// Prices and amounts to 8 decimals, so tick multiples print cleanly.
fn round(x: f64) -> f64 {
    (x * 1e8).round() / 1e8
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::catalog;
    use super::*;

    fn market(seed: u64) -> Market {
        Market::new(
            catalog::spec("BTC-PERPETUAL", 1, SystemTime::now()).unwrap(),
            seed,
        )
    }

    #[test]
    fn trades_follow_the_walk_on_the_tick_grid_with_contiguous_seqs() {
        let mut m = market(42);
        let mut last = m.last_price();
        for expected_seq in 1..=1000 {
            let t = m.next_trade(0);
            assert_eq!(t.trade_seq, expected_seq);
            let ticks = t.price / 0.5;
            assert!(
                (ticks - ticks.round()).abs() < 1e-9,
                "{} off the tick grid",
                t.price
            );
            assert!(
                (t.price - last).abs() <= 1.0 + 1e-9,
                "moves at most two ticks"
            );
            let expected_direction = if t.price > last {
                0
            } else if t.price < last {
                2
            } else {
                t.tick_direction
            };
            assert_eq!(t.tick_direction, expected_direction);
            last = t.price;
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trades_and_book_changes() {
        let (mut a, mut b) = (market(7), market(7));
        for _ in 0..500 {
            let (ta, tb) = (a.next_trade(1), b.next_trade(2));
            assert_eq!(
                (ta.trade_seq, ta.price, ta.amount, &ta.direction),
                (tb.trade_seq, tb.price, tb.amount, &tb.direction)
            );
        }
        for _ in 0..500 {
            let (ca, cb) = (a.next_book_change(1), b.next_book_change(2));
            assert_eq!(
                (ca.change_id, &ca.bids, &ca.asks),
                (cb.change_id, &cb.bids, &cb.asks)
            );
        }
        let mut c = market(8);
        let differs = (0..50).any(|_| a.next_trade(0).price != c.next_trade(0).price);
        assert!(differs, "another seed walks elsewhere");
    }

    #[test]
    fn book_changes_chain_and_the_book_never_crosses() {
        let mut m = market(3);
        let mut last = m.book_snapshot(0).change_id;
        for _ in 0..2000 {
            let change = m.next_book_change(0);
            assert_eq!(change.prev_change_id, Some(last));
            last = change.change_id;
            let (bid, _, ask, _) = m.best();
            assert!(
                bid < ask || bid == 0.0 || ask == 0.0,
                "crossed: {bid} >= {ask}"
            );
        }
    }
}

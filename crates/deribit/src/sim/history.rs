//! What the simulator has traded, for the history methods: bounded per
//! instrument, contiguous in `trade_seq`, and the same trades that were streamed.

use std::collections::VecDeque;

use crate::model::{PublicTrade, TradingViewChart};

/// One instrument's recent trades, oldest first.
#[derive(Debug)]
pub(super) struct History {
    trades: VecDeque<PublicTrade>,
    limit: usize,
}

/// Newest or oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sorting {
    Asc,
    Desc,
}

impl History {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            trades: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    pub(super) fn push(&mut self, trade: PublicTrade) {
        if self.trades.len() == self.limit {
            self.trades.pop_front();
        }
        self.trades.push_back(trade);
    }

    /// The last `n` trades, oldest first.
    pub(super) fn last(&self, n: usize) -> Vec<PublicTrade> {
        let skip = self.trades.len().saturating_sub(n);
        self.trades.iter().skip(skip).cloned().collect()
    }

    /// Trades with `start_seq <= trade_seq <= end_seq`, at most `count`, and
    /// whether more matched.
    pub(super) fn by_seq(
        &self,
        start: i64,
        end: i64,
        count: usize,
        sorting: Sorting,
    ) -> (Vec<PublicTrade>, bool) {
        let Some(first) = self.trades.front().map(|t| t.trade_seq) else {
            return (Vec::new(), false);
        };
        let from = usize::try_from(start.max(first) - first).unwrap_or(0);
        let to = usize::try_from((end - first + 1).max(0))
            .unwrap_or(0)
            .min(self.trades.len());
        self.page(from, to, count, sorting)
    }

    /// Trades with `start_ms <= timestamp <= end_ms`.
    pub(super) fn by_time(
        &self,
        start_ms: u64,
        end_ms: u64,
        count: usize,
        sorting: Sorting,
    ) -> (Vec<PublicTrade>, bool) {
        let from = self.trades.partition_point(|t| t.timestamp < start_ms);
        let to = self.trades.partition_point(|t| t.timestamp <= end_ms);
        self.page(from, to, count, sorting)
    }

    fn page(
        &self,
        from: usize,
        to: usize,
        count: usize,
        sorting: Sorting,
    ) -> (Vec<PublicTrade>, bool) {
        if from >= to {
            return (Vec::new(), false);
        }
        let matched = to - from;
        let take = matched.min(count);
        let page: Vec<PublicTrade> = match sorting {
            Sorting::Asc => self.trades.range(from..from + take).cloned().collect(),
            Sorting::Desc => self.trades.range(to - take..to).rev().cloned().collect(),
        };
        (page, matched > take)
    }

    /// OHLCV bars of `resolution_ms` covering `[start_ms, end_ms]`, from the
    /// first bar with a trade: bars without trades repeat the previous close
    /// with zero volume, as Deribit's chart data does.
    pub(super) fn chart(&self, start_ms: u64, end_ms: u64, resolution_ms: u64) -> TradingViewChart {
        let mut chart = TradingViewChart::default();
        let from = self.trades.partition_point(|t| t.timestamp < start_ms);
        let to = self.trades.partition_point(|t| t.timestamp <= end_ms);
        let resolution_ms = resolution_ms.max(1);
        if from >= to {
            chart.status = "no_data".into();
            return chart;
        }
        let bucket_of = |ms: u64| ms - ms % resolution_ms;
        let first = &self.trades[from];
        let last = bucket_of(end_ms).min(bucket_of(self.trades[to - 1].timestamp));
        let mut close = first.price;
        let mut i = from;
        let mut bucket = bucket_of(first.timestamp);
        while bucket <= last {
            let next = bucket + resolution_ms;
            // Bars without trades repeat the previous close with zero volume.
            let (mut o, mut h, mut l, mut v, mut cost) = (close, close, close, 0.0, 0.0);
            let mut traded = false;
            while i < to && self.trades[i].timestamp < next {
                let t = &self.trades[i];
                if traded {
                    h = h.max(t.price);
                    l = l.min(t.price);
                } else {
                    (o, h, l) = (t.price, t.price, t.price);
                    traded = true;
                }
                close = t.price;
                v += t.amount;
                cost += t.amount * t.price;
                i += 1;
            }
            chart.ticks.push(bucket);
            chart.open.push(o);
            chart.high.push(h);
            chart.low.push(l);
            chart.close.push(close);
            chart.volume.push(v);
            chart.cost.push(cost);
            bucket = next;
        }
        chart.status = "ok".into();
        chart
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(seq: i64, ts: u64, price: f64) -> PublicTrade {
        PublicTrade::buy("X", seq, ts, price, 1.0)
    }

    fn history() -> History {
        let mut h = History::new(1000);
        for seq in 1..=10 {
            h.push(trade(seq, 1000 * seq as u64, seq as f64));
        }
        h
    }

    #[test]
    fn pages_by_sequence_in_both_orders() {
        let h = history();
        let (asc, more) = h.by_seq(3, 8, 4, Sorting::Asc);
        assert_eq!(
            asc.iter().map(|t| t.trade_seq).collect::<Vec<_>>(),
            [3, 4, 5, 6]
        );
        assert!(more);
        let (desc, more) = h.by_seq(3, 8, 10, Sorting::Desc);
        assert_eq!(
            desc.iter().map(|t| t.trade_seq).collect::<Vec<_>>(),
            [8, 7, 6, 5, 4, 3]
        );
        assert!(!more);
        assert!(h.by_seq(11, 20, 10, Sorting::Asc).0.is_empty());
        assert_eq!(h.by_seq(-5, 1, 10, Sorting::Asc).0.len(), 1);
    }

    #[test]
    fn pages_by_time() {
        let (page, more) = history().by_time(2500, 5000, 10, Sorting::Asc);
        assert_eq!(
            page.iter().map(|t| t.trade_seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(!more);
    }

    #[test]
    fn old_trades_fall_out_at_the_limit() {
        let mut h = History::new(3);
        for seq in 1..=5 {
            h.push(trade(seq, seq as u64, 1.0));
        }
        assert_eq!(
            h.by_seq(0, 100, 100, Sorting::Asc)
                .0
                .iter()
                .map(|t| t.trade_seq)
                .collect::<Vec<_>>(),
            [3, 4, 5]
        );
    }

    #[test]
    fn chart_bars_aggregate_trades_and_fill_gaps() {
        let mut h = History::new(100);
        h.push(trade(1, 0, 10.0));
        h.push(trade(2, 500, 12.0));
        h.push(trade(3, 900, 9.0));
        h.push(trade(4, 2_100, 11.0));
        let chart = h.chart(0, 2_999, 1000);
        assert_eq!(chart.status, "ok");
        assert_eq!(chart.ticks, [0, 1000, 2000]);
        assert_eq!(chart.open, [10.0, 9.0, 11.0]);
        assert_eq!(chart.high, [12.0, 9.0, 11.0]);
        assert_eq!(chart.low, [9.0, 9.0, 11.0]);
        assert_eq!(chart.close, [9.0, 9.0, 11.0]);
        assert_eq!(chart.volume, [3.0, 0.0, 1.0]);
        assert_eq!(h.chart(5_000, 6_000, 1000).status, "no_data");
    }
}

//! Subscription channel names: parsed from and written as Deribit spells them.

use std::fmt;
use std::str::FromStr;

/// How often a channel's updates are sent; written as on the wire (`raw`,
/// `100ms`, `agg2`) in configuration too.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum Interval {
    /// Every change as it happens (authenticated connections only).
    Raw,
    /// Aggregated over 100 ms.
    Ms100,
    /// Deribit's second aggregation level.
    Agg2,
}

impl Interval {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Raw => "raw",
            Interval::Ms100 => "100ms",
            Interval::Agg2 => "agg2",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "raw" => Some(Interval::Raw),
            "100ms" => Some(Interval::Ms100),
            "agg2" => Some(Interval::Agg2),
            _ => None,
        }
    }
}

/// Text that is not an interval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an interval: raw, 100ms or agg2")]
pub struct NotAnInterval(pub String);

impl TryFrom<String> for Interval {
    type Error = NotAnInterval;

    fn try_from(text: String) -> Result<Self, NotAnInterval> {
        Interval::parse(&text).ok_or(NotAnInterval(text))
    }
}

impl From<Interval> for String {
    fn from(interval: Interval) -> String {
        interval.as_str().to_owned()
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One subscription channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// `trades.{instrument}.{interval}`
    Trades {
        /// The instrument's name (`BTC-PERPETUAL`).
        instrument: String,
        /// How often the exchange sends it.
        interval: Interval,
    },
    /// `ticker.{instrument}.{interval}`
    Ticker {
        /// The instrument's name (`BTC-PERPETUAL`).
        instrument: String,
        /// How often the exchange sends it.
        interval: Interval,
    },
    /// `book.{instrument}.{interval}`: a snapshot, then changes.
    Book {
        /// The instrument's name (`BTC-PERPETUAL`).
        instrument: String,
        /// How often the exchange sends it.
        interval: Interval,
    },
    /// `book.{instrument}.{group}.{depth}.{interval}`: full snapshots.
    BookGrouped {
        /// The instrument's name (`BTC-PERPETUAL`).
        instrument: String,
        /// Price grouping (`none` or a number).
        group: String,
        /// Levels per side.
        depth: u32,
        /// How often the exchange sends it.
        interval: Interval,
    },
    /// `chart.trades.{instrument}.{resolution}`
    ChartTrades {
        /// The instrument's name (`BTC-PERPETUAL`).
        instrument: String,
        /// `1`, `3`, ..., `1D`.
        resolution: String,
    },
    /// `quote.{instrument}`
    Quote {
        /// The instrument's name (`BTC-PERPETUAL`).
        instrument: String,
    },
}

/// What a channel carries, read off its name without allocating: how a
/// notification's payload is decoded (the hot path does not build a [`Channel`]
/// per frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// `trades.{instrument}.{interval}` or `trades.{kind}.{currency}.{interval}`.
    Trades,
    /// `ticker.{instrument}.{interval}`.
    Ticker,
    /// `book.{instrument}.{interval}`.
    Book,
    /// `book.{instrument}.{group}.{depth}.{interval}`.
    BookGrouped,
    /// `chart.trades.{instrument}.{resolution}`.
    ChartTrades,
    /// `quote.{instrument}`.
    Quote,
}

impl ChannelKind {
    /// The kind of the channel named `name`, if Keel reads it.
    pub fn of(name: &str) -> Option<Self> {
        let mut parts = name.split('.');
        let first = parts.next()?;
        let second = parts.next();
        let segments = 1 + usize::from(second.is_some()) + parts.count();
        match (first, segments) {
            ("trades", 3 | 4) => Some(ChannelKind::Trades),
            ("ticker", 3) => Some(ChannelKind::Ticker),
            ("book", 3) => Some(ChannelKind::Book),
            ("book", 5) => Some(ChannelKind::BookGrouped),
            ("chart", 4) if second == Some("trades") => Some(ChannelKind::ChartTrades),
            ("quote", 2) => Some(ChannelKind::Quote),
            _ => None,
        }
    }
}

impl Channel {
    /// What this channel carries.
    pub fn kind(&self) -> ChannelKind {
        match self {
            Channel::Trades { .. } => ChannelKind::Trades,
            Channel::Ticker { .. } => ChannelKind::Ticker,
            Channel::Book { .. } => ChannelKind::Book,
            Channel::BookGrouped { .. } => ChannelKind::BookGrouped,
            Channel::ChartTrades { .. } => ChannelKind::ChartTrades,
            Channel::Quote { .. } => ChannelKind::Quote,
        }
    }
}

/// A channel name Keel does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown or malformed channel `{0}`")]
pub struct BadChannel(pub String);

/// Chart resolutions Deribit accepts.
pub const RESOLUTIONS: &[&str] = &[
    "1", "3", "5", "10", "15", "30", "60", "120", "180", "360", "720", "1D",
];

impl FromStr for Channel {
    type Err = BadChannel;

    fn from_str(s: &str) -> Result<Self, BadChannel> {
        let bad = || BadChannel(s.to_owned());
        // Instrument names contain dashes but never dots, so splitting on dots is safe.
        let parts: Vec<&str> = s.split('.').collect();
        let instrument = |i: usize| -> Result<String, BadChannel> {
            match parts.get(i) {
                Some(name) if !name.is_empty() => Ok((*name).to_owned()),
                _ => Err(bad()),
            }
        };
        let interval = |i: usize| {
            parts
                .get(i)
                .and_then(|p| Interval::parse(p))
                .ok_or_else(bad)
        };
        match parts.as_slice() {
            ["trades", _, _] => Ok(Channel::Trades {
                instrument: instrument(1)?,
                interval: interval(2)?,
            }),
            ["ticker", _, _] => Ok(Channel::Ticker {
                instrument: instrument(1)?,
                interval: interval(2)?,
            }),
            ["book", _, _] => Ok(Channel::Book {
                instrument: instrument(1)?,
                interval: interval(2)?,
            }),
            ["book", _, group, depth, _] => Ok(Channel::BookGrouped {
                instrument: instrument(1)?,
                group: (*group).to_owned(),
                depth: depth.parse().map_err(|_| bad())?,
                interval: interval(4)?,
            }),
            ["chart", "trades", _, resolution] if RESOLUTIONS.contains(resolution) => {
                Ok(Channel::ChartTrades {
                    instrument: instrument(2)?,
                    resolution: (*resolution).to_owned(),
                })
            }
            ["quote", _] => Ok(Channel::Quote {
                instrument: instrument(1)?,
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Trades {
                instrument,
                interval,
            } => {
                write!(f, "trades.{instrument}.{}", interval.as_str())
            }
            Channel::Ticker {
                instrument,
                interval,
            } => {
                write!(f, "ticker.{instrument}.{}", interval.as_str())
            }
            Channel::Book {
                instrument,
                interval,
            } => {
                write!(f, "book.{instrument}.{}", interval.as_str())
            }
            Channel::BookGrouped {
                instrument,
                group,
                depth,
                interval,
            } => write!(f, "book.{instrument}.{group}.{depth}.{}", interval.as_str()),
            Channel::ChartTrades {
                instrument,
                resolution,
            } => write!(f, "chart.trades.{instrument}.{resolution}"),
            Channel::Quote { instrument } => write!(f, "quote.{instrument}"),
        }
    }
}

impl Channel {
    /// The instrument the channel is about.
    pub fn instrument(&self) -> &str {
        match self {
            Channel::Trades { instrument, .. }
            | Channel::Ticker { instrument, .. }
            | Channel::Book { instrument, .. }
            | Channel::BookGrouped { instrument, .. }
            | Channel::ChartTrades { instrument, .. }
            | Channel::Quote { instrument } => instrument,
        }
    }

    /// Whether the channel needs an authenticated connection.
    pub fn is_raw(&self) -> bool {
        matches!(
            self,
            Channel::Trades {
                interval: Interval::Raw,
                ..
            } | Channel::Ticker {
                interval: Interval::Raw,
                ..
            } | Channel::Book {
                interval: Interval::Raw,
                ..
            } | Channel::BookGrouped {
                interval: Interval::Raw,
                ..
            }
        )
    }
}

/// Deribit refuses a frame over 32 kB (-32600 "request entity too large", sent
/// without an id); subscriptions go in requests well below that.
pub const SUBSCRIBE_FRAME_LIMIT: usize = 16 * 1024;

/// `channels` split into lists whose subscribe request stays under
/// [`SUBSCRIBE_FRAME_LIMIT`] bytes, in order.
pub fn subscribe_batches(channels: Vec<String>) -> Vec<Vec<String>> {
    // `{"jsonrpc":"2.0","id":N,"method":"private/subscribe","params":{"channels":[]}}`
    const ENVELOPE: usize = 96;
    let mut batches = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mut size = ENVELOPE;
    for channel in channels {
        // The name, its quotes and a comma; names are ASCII, never escaped.
        let cost = channel.len() + 3;
        if !batch.is_empty() && size + cost > SUBSCRIBE_FRAME_LIMIT {
            batches.push(std::mem::take(&mut batch));
            size = ENVELOPE;
        }
        size += cost;
        batch.push(channel);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_round_trips() {
        for name in [
            "trades.BTC-PERPETUAL.raw",
            "trades.ETH-27DEC24.100ms",
            "trades.BTC-27DEC24-60000-C.agg2",
            "ticker.BTC-PERPETUAL.100ms",
            "book.BTC-PERPETUAL.raw",
            "book.BTC-PERPETUAL.none.10.100ms",
            "book.ETH-PERPETUAL.5.20.agg2",
            "chart.trades.BTC-PERPETUAL.1",
            "chart.trades.BTC-PERPETUAL.1D",
            "quote.BTC-PERPETUAL",
        ] {
            let channel: Channel = name.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(channel.to_string(), name);
            assert_eq!(ChannelKind::of(name), Some(channel.kind()), "{name}");
        }
    }

    #[test]
    fn the_kind_is_read_off_names_keel_does_not_subscribe_itself() {
        assert_eq!(
            ChannelKind::of("trades.future.BTC.raw"),
            Some(ChannelKind::Trades)
        );
        for name in [
            "",
            "trades",
            "chart.bars.X.1",
            "user.orders.any.raw",
            "platform_state",
        ] {
            assert_eq!(ChannelKind::of(name), None, "{name}");
        }
    }

    #[test]
    fn malformed_channels_are_errors() {
        for name in [
            "",
            "trades",
            "trades.BTC-PERPETUAL",
            "trades.BTC-PERPETUAL.1s",
            "trades..raw",
            "book.X.none.ten.100ms",
            "chart.trades.X.2",
            "quote",
            "nope.X.raw",
            "trades.X.raw.extra",
        ] {
            assert!(name.parse::<Channel>().is_err(), "{name}");
        }
    }

    #[test]
    fn subscribe_batches_stay_under_the_limit_and_keep_every_channel_in_order() {
        let channels: Vec<String> = (0..2_000)
            .map(|i| format!("book.BTC-25DEC26-{}-C.none.10.100ms", 1000 + i))
            .collect();
        let batches = subscribe_batches(channels.clone());
        assert!(batches.len() > 1, "{} batches", batches.len());
        for batch in &batches {
            let frame = serde_json::to_string(&crate::Request::new(
                u64::MAX,
                "private/subscribe",
                serde_json::json!({ "channels": batch }),
            ))
            .unwrap();
            assert!(
                frame.len() <= SUBSCRIBE_FRAME_LIMIT,
                "{} bytes",
                frame.len()
            );
        }
        assert_eq!(batches.concat(), channels);
        assert_eq!(subscribe_batches(vec!["quote.X".into()]), [["quote.X"]]);
        assert!(subscribe_batches(Vec::new()).is_empty());
    }

    #[test]
    fn only_raw_intervals_need_authentication() {
        assert!("trades.X.raw".parse::<Channel>().unwrap().is_raw());
        assert!(!"trades.X.100ms".parse::<Channel>().unwrap().is_raw());
        assert!(!"quote.X".parse::<Channel>().unwrap().is_raw());
    }
}

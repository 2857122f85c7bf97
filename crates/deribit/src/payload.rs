//! What a subscription notification carries, decoded by its channel's kind.
//!
//! The receiver and the corpus test both go through [`decode`], so "every real
//! frame parses" is a statement about the code the daemon runs.

use super::channel::ChannelKind;
use super::model::{BookGrouped, BookUpdate, ChartBar, PublicTrade, Quote, Ticker};

/// A decoded notification payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// `trades.{instrument}.{interval}` and `trades.{kind}.{currency}.{interval}`.
    Trades(Vec<PublicTrade>),
    /// `book.{instrument}.{interval}`: a snapshot or a change.
    Book(BookUpdate),
    /// `book.{instrument}.{group}.{depth}.{interval}`: a full snapshot.
    BookGrouped(BookGrouped),
    /// `ticker.{instrument}.{interval}`.
    Ticker(Box<Ticker>),
    /// `quote.{instrument}`.
    Quote(Quote),
    /// `chart.trades.{instrument}.{resolution}`.
    Chart(ChartBar),
    /// A channel Keel does not consume (`user.*`, `platform_state`,
    /// `deribit_price_index.*`, `incremental_ticker.*`, ...), named by its
    /// first segment; recognised, not an error.
    Skipped(String),
}

/// A payload that does not have the shape its channel promises.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{channel}` payload: {reason}")]
pub struct PayloadError {
    /// The channel it arrived on.
    pub channel: String,
    /// What is wrong, naming the field (serde's message: "missing field `trade_seq`").
    pub reason: String,
}

fn parse<'a, T: serde::Deserialize<'a>>(channel: &str, data: &'a str) -> Result<T, PayloadError> {
    serde_json::from_str(data).map_err(|e| PayloadError {
        channel: channel.to_owned(),
        reason: e.to_string(),
    })
}

/// Decodes a `trades.*` payload, keeping each trade's text as the exchange
/// wrote it beside the decoded trade: the receiver publishes that text as it is,
/// so a trade is decoded once on the way in and never encoded again.
///
/// One pass over the array: each trade is decoded where it stands and its text
/// is the span the decoder consumed, so the payload is not first split into
/// raw elements and then scanned again per element.
pub fn decode_trades<'a>(
    channel: &str,
    data: &'a str,
) -> Result<Vec<(PublicTrade, &'a str)>, PayloadError> {
    let error = |reason: String| PayloadError {
        channel: channel.to_owned(),
        reason,
    };
    let bytes = data.as_bytes();
    let skip = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let mut at = skip(0);
    if bytes.get(at) != Some(&b'[') {
        // Not an array: serde says what it is ("invalid type: map, expected a sequence").
        return parse::<Vec<serde::de::IgnoredAny>>(channel, data).map(|_| Vec::new());
    }
    // A frame of N trades is N objects of roughly the same size.
    let mut trades = Vec::with_capacity(data.len() / 256 + 1);
    at = skip(at + 1);
    if bytes.get(at) == Some(&b']') {
        at = skip(at + 1);
    } else {
        loop {
            let rest = &data[at..];
            let mut one = serde_json::Deserializer::from_str(rest).into_iter::<PublicTrade>();
            let trade = match one.next() {
                Some(Ok(trade)) => trade,
                Some(Err(e)) => return Err(error(e.to_string())),
                None => return Err(error("EOF while parsing a list".into())),
            };
            let end = one.byte_offset();
            trades.push((trade, &rest[..end]));
            at = skip(at + end);
            match bytes.get(at) {
                Some(b',') => at = skip(at + 1),
                Some(b']') => {
                    at = skip(at + 1);
                    break;
                }
                Some(_) => return Err(error(format!("expected `,` or `]` at byte {at}"))),
                None => return Err(error("EOF while parsing a list".into())),
            }
        }
    }
    if at != bytes.len() {
        return Err(error(format!("trailing characters at byte {at}")));
    }
    Ok(trades)
}

/// Decodes `data` as the payload of `channel`.
pub fn decode(channel: &str, data: &str) -> Result<Payload, PayloadError> {
    Ok(match ChannelKind::of(channel) {
        Some(ChannelKind::Trades) => Payload::Trades(parse(channel, data)?),
        Some(ChannelKind::Book) => Payload::Book(parse(channel, data)?),
        Some(ChannelKind::BookGrouped) => Payload::BookGrouped(parse(channel, data)?),
        Some(ChannelKind::Ticker) => Payload::Ticker(Box::new(parse(channel, data)?)),
        Some(ChannelKind::Quote) => Payload::Quote(parse(channel, data)?),
        Some(ChannelKind::ChartTrades) => Payload::Chart(parse(channel, data)?),
        None => Payload::Skipped(channel.split('.').next().unwrap_or_default().to_owned()),
    })
}

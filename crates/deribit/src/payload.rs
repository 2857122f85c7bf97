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
pub fn decode_trades<'a>(
    channel: &str,
    data: &'a str,
) -> Result<Vec<(PublicTrade, &'a str)>, PayloadError> {
    let texts: Vec<&'a serde_json::value::RawValue> = parse(channel, data)?;
    texts
        .into_iter()
        .map(|text| Ok((parse(channel, text.get())?, text.get())))
        .collect()
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

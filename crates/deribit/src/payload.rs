//! What a subscription notification carries, decoded by its channel's kind.
//!
//! The receiver and the corpus test both go through [`decode`], so "every real
//! frame parses" is a statement about the code the daemon runs.

use super::channel::ChannelKind;
use super::model::{BookGrouped, BookUpdate, ChartBar, PublicTrade, Quote, Ticker, TradeView};

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

/// Trades, each with its text as the exchange wrote it.
pub type Texts<'a> = Vec<(TradeView<'a>, &'a str)>;

/// Decodes a `trades.*` payload, keeping each trade's text as the exchange
/// wrote it beside the decoded trade: the receiver publishes that text as it is,
/// so a trade is decoded once on the way in and never encoded again.
///
/// One pass over the array: each trade is decoded where it stands and its text
/// is the span the decoder consumed, so the payload is not first split into
/// raw elements and then scanned again per element.
pub fn decode_trades<'a>(channel: &str, data: &'a str) -> Result<Texts<'a>, PayloadError> {
    let error = |reason: String| PayloadError {
        channel: channel.to_owned(),
        reason,
    };
    let at = skip_whitespace(data.as_bytes(), 0);
    if data.as_bytes().get(at) != Some(&b'[') {
        // Not an array: serde says what it is ("invalid type: map, expected a sequence").
        return parse::<Vec<serde::de::IgnoredAny>>(channel, data).map(|_| Vec::new());
    }
    let (trades, end) = trades_at(&data[at..]).map_err(error)?;
    let end = skip_whitespace(data.as_bytes(), at + end);
    if end != data.len() {
        return Err(error(format!("trailing characters at byte {end}")));
    }
    Ok(trades)
}

/// Reads the trades array `text` starts with (no whitespace before it) and
/// says how many bytes it took; what follows is the caller's. For a reader
/// that finds the data inside a frame it is reading (the receiver's one-pass
/// read of a notification, [`crate::parse_subscription`]). `None` when it is
/// not a well-formed array of trades: [`decode_trades`] says what is wrong.
pub fn read_trades(text: &str) -> Option<(Texts<'_>, usize)> {
    if text.as_bytes().first() != Some(&b'[') {
        return None;
    }
    trades_at(text).ok()
}

/// JSON's whitespace (not `u8::is_ascii_whitespace`, which takes form feeds).
pub(crate) fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// One value of type `T` at the start of `text` (whitespace before it
/// allowed), read by serde, and the bytes it took; `None` when there is none.
pub(crate) fn value_at<'a, T: serde::Deserialize<'a>>(
    text: &'a str,
) -> Option<Result<(T, usize), serde_json::Error>> {
    let mut one = serde_json::Deserializer::from_str(text).into_iter::<T>();
    let value = one.next()?;
    Some(value.map(|value| (value, one.byte_offset())))
}

/// The most trades [`trades_at`] makes room for before it has read them.
const MAX_RESERVE: usize = 1 << 16;

/// `text` starts with `[`: decodes the trades up to its `]`, and the bytes
/// taken.
fn trades_at(text: &str) -> Result<(Texts<'_>, usize), String> {
    let bytes = text.as_bytes();
    let mut trades = Vec::new();
    let mut at = skip_whitespace(bytes, 1);
    if bytes.get(at) == Some(&b']') {
        return Ok((trades, at + 1));
    }
    loop {
        let rest = &text[at..];
        // The exchange's usual shape by hand; anything else by serde.
        let read = crate::scan::trade(rest).map(Ok);
        let (trade, end) = match read.or_else(|| value_at::<TradeView>(rest)) {
            Some(Ok(read)) => read,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("EOF while parsing a list".into()),
        };
        if trades.is_empty() {
            // Room for all at once, judged by the first (the trades of a
            // frame are of a size, give or take a third): a trade is large,
            // and each growth would move every one read so far. Bounded, for
            // a frame whose first trade is small and the rest something else.
            trades.reserve((text.len() / (end * 3 / 4).max(1) + 1).min(MAX_RESERVE));
        }
        trades.push((trade, &rest[..end]));
        at = skip_whitespace(bytes, at + end);
        match bytes.get(at) {
            Some(b',') => at = skip_whitespace(bytes, at + 1),
            Some(b']') => return Ok((trades, at + 1)),
            Some(_) => return Err(format!("expected `,` or `]` at byte {at}")),
            None => return Err("EOF while parsing a list".into()),
        }
    }
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

//! How trades travel through Redis: one stream per instrument; an entry holds
//! one trade (the exchange's JSON for it in field `t`) or several of one
//! instrument in order (a JSON array of them in field `b`, what the receiver
//! writes when it has more than one to publish).

use crate::resource::redis::{Fields, StreamEntry};
use crate::service::receiver::{check_values, Rejection};
use keel_deribit::decode_trades;
use keel_deribit::model::{BadTrade, PublicTrade, TradeView};
use keel_market::Trade;
use serde_json::value::RawValue;

/// The field holding one trade's JSON.
pub const TRADE_FIELD: &str = "t";

/// The field holding a JSON array of trades.
pub const BATCH_FIELD: &str = "b";

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

/// Trades as one stream entry, from the exchange's own text for each (what the
/// receiver publishes): one as `t`, more as the array `b` of their texts.
/// `decode` reads it as it reads [`encode`]'s.
pub fn encode_texts<T: AsRef<[u8]>>(texts: &[T]) -> Fields {
    if let [one] = texts {
        return vec![(TRADE_FIELD.to_owned(), one.as_ref().to_vec())];
    }
    let len = texts.iter().map(|t| t.as_ref().len() + 1).sum::<usize>() + 1;
    let mut json = Vec::with_capacity(len);
    json.push(b'[');
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(text.as_ref());
    }
    json.push(b']');
    vec![(BATCH_FIELD.to_owned(), json)]
}

/// Why a stream entry, or one trade of it, is not a trade Keel can store; it
/// is dead-lettered with this as its reason. `id` is the entry's id, followed
/// by `[i]` for the i-th trade of an entry holding several.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// No trade field at all (or an empty array).
    #[error(
        "entry {id} has no trade (no `{TRADE_FIELD}` or `{BATCH_FIELD}` field, or an empty one)"
    )]
    NoTrade {
        /// The entry's id.
        id: String,
    },
    /// The field is not a trade's JSON (or not an array, for `b`).
    #[error("entry {id}: not a trade: {cause}")]
    NotATrade {
        /// The entry's id.
        id: String,
        /// serde's message.
        cause: String,
    },
    /// A trade the receiver's edge checks would have refused.
    #[error("entry {id}: rejected: {}", reason.as_str())]
    Rejected {
        /// The entry's id.
        id: String,
        /// Which check.
        reason: Rejection,
    },
    /// A trade with a value Keel cannot store.
    #[error("entry {id}: {cause}")]
    Unstorable {
        /// The entry's id.
        id: String,
        /// What is wrong with it.
        cause: BadTrade,
    },
}

/// What an entry holds: each trade in order, or why it cannot be stored. An
/// `Err` of the whole is an entry with nothing readable in it.
pub type Decoded = Result<Vec<Result<Trade, EntryError>>, EntryError>;

/// The highest `trade_seq` an entry holds, whatever its shape; `None` when
/// none of it decodes.
pub fn last_trade_seq(entry: &StreamEntry) -> Option<i64> {
    decode(entry)
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| t.trade_seq)
        .max()
}

/// An entry back into the trades Keel can store. Its trades are read as
/// views borrowing the entry's text (no copy of a string until the row).
pub fn decode(entry: &StreamEntry) -> Decoded {
    let not_a_trade = |id: String| move |cause: String| EntryError::NotATrade { id, cause };
    if let Some(raw) = entry.field(TRADE_FIELD) {
        let trade: TradeView = utf8(raw)
            .and_then(|text| TradeView::read(text).map_err(|e| e.to_string()))
            .map_err(not_a_trade(entry.id.clone()))?;
        return Ok(vec![checked(trade, || entry.id.clone())]);
    }
    let raw = entry
        .field(BATCH_FIELD)
        .ok_or_else(|| EntryError::NoTrade {
            id: entry.id.clone(),
        })?;
    let at = |i: usize| move || format!("{}[{i}]", entry.id);
    let text = utf8(raw).map_err(not_a_trade(entry.id.clone()))?;
    let trades: Vec<_> = match decode_trades(BATCH_FIELD, text) {
        Ok(trades) => trades
            .into_iter()
            .enumerate()
            .map(|(i, (trade, _))| checked(trade, at(i)))
            .collect(),
        // One element that is not a trade fails the whole array: read it
        // again element by element, so only that one is refused.
        Err(_) => batch_texts(entry)
            .map_err(not_a_trade(entry.id.clone()))?
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                TradeView::read(text.get())
                    .map_err(|e| not_a_trade(at(i)())(e.to_string()))
                    .and_then(|trade| checked(trade, at(i)))
            })
            .collect(),
    };
    if trades.is_empty() {
        return Err(EntryError::NoTrade {
            id: entry.id.clone(),
        });
    }
    Ok(trades)
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|e| e.to_string())
}

/// The JSON text of the `index`-th trade of an entry: the whole `t`, or one
/// element of `b` (for a dead letter of that trade alone).
pub fn trade_text(entry: &StreamEntry, index: usize) -> Option<Vec<u8>> {
    if let Some(raw) = entry.field(TRADE_FIELD) {
        return (index == 0).then(|| raw.to_vec());
    }
    let texts = batch_texts(entry).ok()?;
    texts.get(index).map(|t| t.get().as_bytes().to_vec())
}

fn batch_texts(entry: &StreamEntry) -> Result<Vec<&RawValue>, String> {
    let raw = entry.field(BATCH_FIELD).unwrap_or_default();
    serde_json::from_slice(raw).map_err(|e| e.to_string())
}

/// The checks the receiver applies (entries other programs wrote get them
/// too), then the conversion into a row.
fn checked(trade: TradeView<'_>, id: impl Fn() -> String) -> Result<Trade, EntryError> {
    check_values(&trade).map_err(|reason| EntryError::Rejected { id: id(), reason })?;
    trade
        .into_trade()
        .map_err(|cause| EntryError::Unstorable { id: id(), cause })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seq: i64) -> String {
        format!(
            r#"{{"trade_seq":{seq},"trade_id":"{seq}","timestamp":1700000000000,"tick_direction":0,"price":50000.5,"mark_price":50001.0,"index_price":50000.0,"instrument_name":"BTC-PERPETUAL","direction":"buy","amount":10.0,"contracts":1.0}}"#
        )
    }

    fn entry(fields: Fields) -> StreamEntry {
        StreamEntry {
            id: "5-0".into(),
            fields,
        }
    }

    fn seqs(decoded: &[Result<Trade, EntryError>]) -> Vec<Option<i64>> {
        decoded
            .iter()
            .map(|t| t.as_ref().ok().map(|t| t.trade_seq))
            .collect()
    }

    #[test]
    fn one_text_is_a_t_entry_and_several_a_b_array_in_order() {
        let one = encode_texts(&[text(1)]);
        assert_eq!(one[0].0, TRADE_FIELD);
        assert_eq!(seqs(&decode(&entry(one)).unwrap()), [Some(1)]);
        let three = encode_texts(&[text(1), text(2), text(3)]);
        assert_eq!(three[0].0, BATCH_FIELD);
        let decoded = decode(&entry(three.clone())).unwrap();
        assert_eq!(seqs(&decoded), [Some(1), Some(2), Some(3)]);
        assert_eq!(
            trade_text(&entry(three), 1),
            Some(text(2).into_bytes()),
            "a dead letter carries the exchange's text of that trade alone"
        );
    }

    #[test]
    fn a_bad_trade_in_a_batch_is_refused_alone_with_its_place() {
        let sideways = text(3).replace("\"buy\"", "\"sideways\"");
        let fields = encode_texts(&[text(1), "{not json".to_owned(), sideways.clone(), text(4)]);
        // Not JSON at all: the array cannot be read, so the entry goes whole.
        let whole = decode(&entry(fields)).unwrap_err();
        assert!(matches!(whole, EntryError::NotATrade { ref id, .. } if id == "5-0"));

        let missing_price = text(2).replace("\"price\":50000.5,", "");
        let fields = encode_texts(&[text(1), missing_price, sideways, text(4)]);
        let decoded = decode(&entry(fields)).unwrap();
        assert_eq!(seqs(&decoded), [Some(1), None, None, Some(4)]);
        assert!(
            matches!(&decoded[1], Err(EntryError::NotATrade { id, .. }) if id == "5-0[1]"),
            "{decoded:?}"
        );
        assert!(
            matches!(&decoded[2], Err(EntryError::Rejected { id, .. }) if id == "5-0[2]"),
            "{decoded:?}"
        );
    }

    #[test]
    fn an_entry_without_trades_is_refused_whole() {
        for fields in [
            vec![("x".to_owned(), b"1".to_vec())],
            vec![(BATCH_FIELD.to_owned(), b"[]".to_vec())],
        ] {
            assert!(matches!(
                decode(&entry(fields)),
                Err(EntryError::NoTrade { .. })
            ));
        }
        let not_an_array = vec![(BATCH_FIELD.to_owned(), text(1).into_bytes())];
        assert!(matches!(
            decode(&entry(not_an_array)),
            Err(EntryError::NotATrade { .. })
        ));
    }
}

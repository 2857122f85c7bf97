//! Entry points for the fuzz targets (`fuzz/`) and the corpus replay test.
//!
//! Each takes arbitrary bytes and must neither panic nor hang; where a value
//! gets through, it also checks what the rest of Keel relies on (a trade that
//! passes the edge survives the trip through a stream entry unchanged).

use std::path::Path;

use keel_actors::resource::redis::StreamEntry;
use keel_actors::service::receiver::check_values;
use keel_actors::service::streams;
use keel_deribit::model::{PublicTrade, TradeView};
use keel_deribit::{
    decode_trades, parse_request, parse_server_frame, parse_subscription, raw_data, read_trades,
    Channel, ServerFrame,
};

/// One frame from the exchange, as the receiver handles it.
pub fn frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The simulator parses what clients send with the same code.
    let _ = parse_request(text);
    // A trade is read by hand in the exchange's usual shape and by serde
    // otherwise: the two agree on every text, bit for bit.
    let fast = TradeView::read(text);
    let serde = serde_json::from_str::<TradeView>(text);
    assert_eq!(fast.as_ref().ok(), serde.as_ref().ok(), "{text}");
    if let (Ok(fast), Ok(serde)) = (&fast, &serde) {
        for (a, b) in [
            (fast.price, serde.price),
            (fast.amount, serde.amount),
            (fast.index_price, serde.index_price),
        ] {
            assert_eq!(a.to_bits(), b.to_bits(), "{text}");
        }
    }
    let general = parse_server_frame(text);
    // The receiver's one-pass read agrees with the general one wherever it
    // reads anything. It starts serde's nesting limit afresh at each value,
    // so it takes a frame nested a level or two deeper than the general read.
    let deep = matches!(&general, Err(e) if e.to_string().contains("recursion limit"));
    let subscription = match &general {
        Ok(ServerFrame::Subscription { channel, data }) => Some((channel.as_str(), data.get())),
        _ => None,
    };
    if let Some(read) = parse_subscription(text, raw_data) {
        assert!(
            deep || subscription == Some(read),
            "read in one pass as {read:?}, generally as {general:?}"
        );
    }
    if let Some((channel, trades)) = parse_subscription(text, |_, rest| read_trades(rest)) {
        if let Some((c, d)) = subscription {
            assert_eq!(c, channel);
            assert_eq!(decode_trades(c, d).ok().as_ref(), Some(&trades));
        } else {
            assert!(deep, "trades read in one pass, generally {general:?}");
        }
    }
    let Ok(ServerFrame::Subscription { channel, data }) = general else {
        return;
    };
    // The borrowed view the receiver decodes reads each trade as the owned
    // trade does, its text being exactly the trade.
    if let Ok(trades) = decode_trades(&channel, data.get()) {
        for (view, text) in &trades {
            let owned = serde_json::from_str::<PublicTrade>(text);
            assert_eq!(owned.as_ref().ok(), Some(&view.to_public()), "{text}");
            if let Ok(owned) = owned {
                assert_eq!(&owned.view(), view);
            }
        }
    }
    let _ = channel.parse::<Channel>();
    if let Ok(trades) = serde_json::from_str::<Vec<PublicTrade>>(data.get()) {
        for trade in &trades {
            round_trip(trade);
        }
    }
    // The frame's trades packed in one entry, as the receiver writes them:
    // each decodes as it does alone.
    if let Ok(texts) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(data.get()) {
        let texts: Vec<&[u8]> = texts.iter().map(|t| t.get().as_bytes()).collect();
        let packed = StreamEntry {
            id: "1-0".into(),
            fields: streams::encode_texts(&texts),
        };
        if let Ok(decoded) = streams::decode(&packed) {
            assert_eq!(decoded.len(), texts.len());
            for (text, trade) in texts.iter().zip(decoded) {
                let alone = StreamEntry {
                    id: "1-0".into(),
                    fields: streams::encode_texts(&[text]),
                };
                // Alone, a bad trade fails the whole entry; packed, only its
                // place. Either way the same trade gets through or does not.
                let alone = match streams::decode(&alone) {
                    Ok(mut d) if d.len() == 1 => d.pop().and_then(|t| t.ok()),
                    _ => None,
                };
                assert_eq!(alone, trade.ok());
            }
        }
    }
}

/// A trade that passes the edge is stored exactly as it came.
fn round_trip(trade: &PublicTrade) {
    if check_values(&trade.view()).is_err() {
        return;
    }
    let Ok(stored) = trade.to_trade() else {
        return;
    };
    let fields = streams::encode(trade).expect("a checked trade encodes");
    let entry = StreamEntry {
        id: "1-0".into(),
        fields,
    };
    assert_eq!(streams::decode(&entry), Ok(vec![Ok(stored)]), "{trade:?}");
}

/// One stream entry another program may have written: fields separated by
/// NUL bytes, alternating name and value.
pub fn stream_entry(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0);
    let mut fields = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        fields.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    // The whole input as the trade field too, so JSON seeds reach the decoder.
    fields.push((streams::TRADE_FIELD.into(), data.to_vec()));
    fields.rotate_right(1);
    let entry = StreamEntry {
        id: "1-0".into(),
        fields,
    };
    if streams::decode(&entry).is_ok() {
        if let Ok(trade) = serde_json::from_slice::<PublicTrade>(data) {
            round_trip(&trade);
        }
    }
    // And as a packed entry's array.
    let packed = StreamEntry {
        id: "1-0".into(),
        fields: vec![(streams::BATCH_FIELD.into(), data.to_vec())],
    };
    if let Ok(decoded) = streams::decode(&packed) {
        for (i, trade) in decoded.iter().enumerate() {
            if trade.is_ok() {
                assert!(streams::trade_text(&packed, i).is_some());
            }
        }
    }
}

/// A configuration file; the first line may name `KEEL__*` variables to set
/// (`#env KEY=VALUE;KEY=VALUE`).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (vars, body) = match text.strip_prefix("#env ") {
        Some(rest) => rest.split_once('\n').unwrap_or((rest, "")),
        None => ("", text),
    };
    let vars: Vec<(String, String)> = vars
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Ok(config) = crate::config::Config::parse(body, Path::new("fuzz.toml"), vars) {
        // What is valid can be printed (`keel check`).
        config
            .to_redacted_toml()
            .expect("a valid configuration prints");
    }
}

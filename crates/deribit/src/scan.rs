//! A hand-written read of one trade object in the shape the exchange writes
//! it: known keys, no escapes, plain numbers. It is the fast path of
//! [`TradeView::read`]; anything it is not sure of (an escape, an unknown or
//! repeated key, a missing field, a number it would have to round at an
//! extreme, bad JSON) it declines with `None`, and serde reads the text
//! instead, so what a text decodes to, or the error it gets, is serde's in
//! every case. The fuzz target `frame` and the tests below hold the two to
//! the same result.

use std::borrow::Cow;

use crate::model::TradeView;
use crate::payload::skip_whitespace;

/// One trade object at the start of `text` (whitespace before it allowed)
/// and the bytes it took, up to and including its `}`; `None`: let serde read it.
pub(crate) fn trade(text: &str) -> Option<(TradeView<'_>, usize)> {
    let b = text.as_bytes();
    let mut at = skip_whitespace(b, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(b, at + 1);
    let mut seen = 0u16;
    let mut trade_seq = 0;
    let mut trade_id = "";
    let mut timestamp = 0;
    let mut tick_direction = 0;
    let mut price = 0.0;
    let mut mark_price = None;
    let mut index_price = 0.0;
    let mut instrument_name = "";
    let mut direction = "";
    let mut amount = 0.0;
    let mut contracts = None;
    let mut iv = None;
    let mut liquidation = None;
    let mut block_trade_id = None;
    let mut combo_id = None;
    let mut combo_trade_id = None;
    loop {
        let key = string(b, text, &mut at)?;
        at = skip_whitespace(b, at);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_whitespace(b, at + 1);
        let bit = match key {
            "trade_seq" => {
                trade_seq = signed(b, &mut at)?;
                1
            }
            "trade_id" => {
                trade_id = string(b, text, &mut at)?;
                1 << 1
            }
            "timestamp" => {
                let (negative, value) = integer(b, &mut at)?;
                if negative {
                    return None;
                }
                timestamp = value;
                1 << 2
            }
            "tick_direction" => {
                tick_direction = i16::try_from(signed(b, &mut at)?).ok()?;
                1 << 3
            }
            "price" => {
                price = float(b, text, &mut at)?;
                1 << 4
            }
            "mark_price" => {
                mark_price = optional(b, &mut at, |at| float(b, text, at))?;
                1 << 5
            }
            "index_price" => {
                index_price = float(b, text, &mut at)?;
                1 << 6
            }
            "instrument_name" => {
                instrument_name = string(b, text, &mut at)?;
                1 << 7
            }
            "direction" => {
                direction = string(b, text, &mut at)?;
                1 << 8
            }
            "amount" => {
                amount = float(b, text, &mut at)?;
                1 << 9
            }
            "contracts" => {
                contracts = optional(b, &mut at, |at| float(b, text, at))?;
                1 << 10
            }
            "iv" => {
                iv = optional(b, &mut at, |at| float(b, text, at))?;
                1 << 11
            }
            "liquidation" => {
                liquidation = optional(b, &mut at, |at| string(b, text, at))?;
                1 << 12
            }
            "block_trade_id" => {
                block_trade_id = optional(b, &mut at, |at| string(b, text, at))?;
                1 << 13
            }
            "combo_id" => {
                combo_id = optional(b, &mut at, |at| string(b, text, at))?;
                1 << 14
            }
            "combo_trade_id" => {
                combo_trade_id = optional(b, &mut at, |at| string(b, text, at))?;
                1 << 15
            }
            // Serde skips a key it does not know; this read declines it.
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        at = skip_whitespace(b, at);
        match b.get(at) {
            Some(b',') => at = skip_whitespace(b, at + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    // The fields without a default.
    const REQUIRED: u16 = 0b11_1101_1111;
    if seen & REQUIRED != REQUIRED {
        return None;
    }
    let view = TradeView {
        trade_seq,
        trade_id: Cow::Borrowed(trade_id),
        timestamp,
        tick_direction,
        price,
        mark_price,
        index_price,
        instrument_name: Cow::Borrowed(instrument_name),
        direction: Cow::Borrowed(direction),
        amount,
        contracts,
        iv,
        liquidation: liquidation.map(Cow::Borrowed),
        block_trade_id: block_trade_id.map(Cow::Borrowed),
        combo_id: combo_id.map(Cow::Borrowed),
        combo_trade_id: combo_trade_id.map(Cow::Borrowed),
    };
    Some((view, at + 1))
}

/// `null`, or what `read` reads.
fn optional<T>(
    b: &[u8],
    at: &mut usize,
    read: impl FnOnce(&mut usize) -> Option<T>,
) -> Option<Option<T>> {
    if b[*at..].starts_with(b"null") {
        *at += 4;
        return Some(None);
    }
    read(at).map(Some)
}

/// A string without escapes or control characters, borrowed.
fn string<'a>(b: &[u8], text: &'a str, at: &mut usize) -> Option<&'a str> {
    if b.get(*at) != Some(&b'"') {
        return None;
    }
    let start = *at + 1;
    let len = b[start..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    let end = start + len;
    if b[end] != b'"' {
        return None;
    }
    *at = end + 1;
    // Both ends are ASCII, so they are character boundaries.
    text.get(start..end)
}

/// The most digits read as an integer: 19 always fit a `u64`.
const MAX_DIGITS: usize = 19;

/// A JSON integer (no fraction or exponent): its sign and magnitude.
fn integer(b: &[u8], at: &mut usize) -> Option<(bool, u64)> {
    let negative = b.get(*at) == Some(&b'-');
    let start = *at + usize::from(negative);
    let digits = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    // No digits, a leading zero, or more than certainly fits.
    if digits == 0 || digits > MAX_DIGITS || (digits > 1 && b[start] == b'0') {
        return None;
    }
    let end = start + digits;
    if matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let value = b[start..end]
        .iter()
        .fold(0u64, |v, c| v * 10 + u64::from(c - b'0'));
    // Serde reads `-0` as a float, which no integer field takes.
    if negative && value == 0 {
        return None;
    }
    *at = end;
    Some((negative, value))
}

/// An integer as an `i64`, `None` outside it.
fn signed(b: &[u8], at: &mut usize) -> Option<i64> {
    let (negative, value) = integer(b, at)?;
    let value = i64::try_from(value).ok()?;
    Some(if negative { -value } else { value })
}

/// A JSON number as an `f64`, correctly rounded, as serde's `float_roundtrip`
/// reads it. Declined: a result of zero, subnormal or infinite (where serde
/// has its own rules for sign and range), and integers too long to be sure of.
fn float(b: &[u8], text: &str, at: &mut usize) -> Option<f64> {
    let start = *at;
    let mut end = start + usize::from(b.get(start) == Some(&b'-'));
    let int_digits = b[end..].iter().take_while(|c| c.is_ascii_digit()).count();
    if int_digits == 0 || (int_digits > 1 && b[end] == b'0') {
        return None;
    }
    end += int_digits;
    let mut plain = true;
    if b.get(end) == Some(&b'.') {
        let digits = b[end + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        end += 1 + digits;
        plain = false;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        end += 1;
        if matches!(b.get(end), Some(b'+' | b'-')) {
            end += 1;
        }
        let digits = b[end..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        end += digits;
        plain = false;
    }
    let value = if plain {
        // Serde reads an integer as one and converts it.
        let (negative, magnitude) = integer(b, &mut start.clone())?;
        let value = magnitude as f64;
        if negative {
            -value
        } else {
            value
        }
    } else if let Some(value) = exact(&b[start..end]) {
        value
    } else {
        text.get(start..end)?.parse::<f64>().ok()?
    };
    if !value.is_normal() {
        return None;
    }
    *at = end;
    Some(value)
}

/// The powers of ten an `f64` holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A JSON number with a fraction or an exponent (`lit`, well formed) whose
/// digits fit 53 bits and whose power of ten is within 22: the digits and
/// the power are both exact `f64`s, so one multiplication or division,
/// rounded once, is the correctly rounded value (Clinger's fast path, as the
/// exchange's prices are written). `None` otherwise: the full parse.
fn exact(lit: &[u8]) -> Option<f64> {
    let (negative, digits) = match lit.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, lit),
    };
    let mut mantissa: u64 = 0;
    let mut scale: i32 = 0;
    let mut fraction = false;
    let mut at = 0;
    while let Some(&c) = digits.get(at) {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                scale -= i32::from(fraction);
            }
            b'.' => fraction = true,
            _ => break,
        }
        at += 1;
    }
    if at < digits.len() {
        // `e` or `E`, a sign perhaps, digits.
        at += 1;
        let below = digits.get(at) == Some(&b'-');
        at += usize::from(matches!(digits.get(at), Some(b'+' | b'-')));
        let power = digits[at..].iter().try_fold(0i32, |p, c| {
            p.checked_mul(10)?.checked_add(i32::from(c - b'0'))
        })?;
        scale = if below {
            scale.checked_sub(power)?
        } else {
            scale.checked_add(power)?
        };
    }
    if mantissa > 1 << 53 {
        return None;
    }
    let m = mantissa as f64;
    let value = if scale >= 0 {
        m * POW10.get(usize::try_from(scale).ok()?)?
    } else {
        m / POW10.get(usize::try_from(-scale).ok()?)?
    };
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde reads, and the bytes it took.
    fn serde_read(text: &str) -> Option<(TradeView<'_>, usize)> {
        crate::payload::value_at::<TradeView>(text).and_then(Result::ok)
    }

    /// The scan agrees with serde wherever it answers.
    fn agrees(text: &str) -> bool {
        match trade(text) {
            None => true,
            Some((view, len)) => {
                let Some((expected, expected_len)) = serde_read(text) else {
                    panic!("scan read {text:?}, serde refuses it");
                };
                assert_eq!(len, expected_len, "{text}");
                assert_eq!(view, expected, "{text}");
                for (a, b) in [
                    (view.price, expected.price),
                    (view.index_price, expected.index_price),
                    (view.amount, expected.amount),
                ] {
                    assert_eq!(a.to_bits(), b.to_bits(), "{text}");
                }
                true
            }
        }
    }

    const TRADE: &str = r#"{"trade_seq":30289442,"trade_id":"348079269","timestamp":1764000000000,"tick_direction":1,"price":97000.5,"mark_price":96999.33,"instrument_name":"BTC-PERPETUAL","index_price":97003.91,"direction":"buy","amount":10.0,"contracts":1}"#;

    #[test]
    fn the_exchanges_shape_is_read_as_serde_reads_it() {
        let (view, len) = trade(TRADE).expect("the common shape");
        assert_eq!(len, TRADE.len());
        assert!(agrees(TRADE));
        assert_eq!(view.trade_seq, 30_289_442);
        assert_eq!(view.contracts, Some(1.0));
        assert!(matches!(view.instrument_name, Cow::Borrowed(_)));
        let spaced = " {\n \"trade_seq\" : 1 , \"trade_id\":\"a\",\"timestamp\":0,\"tick_direction\":0,\"price\":1e3,\"index_price\":2.5E-1,\"instrument_name\":\"X\",\"direction\":\"sell\",\"amount\":-3,\"iv\":null,\"liquidation\":\"M\" }";
        assert!(trade(spaced).is_some());
        assert!(agrees(spaced));
    }

    #[test]
    fn what_it_is_unsure_of_is_left_to_serde() {
        let declined = [
            TRADE.replace("\"buy\"", "\"b\\u0075y\""),
            TRADE.replace("\"contracts\"", "\"legs\":[1],\"contracts\""),
            TRADE.replace("\"contracts\":1", "\"contracts\":1,\"price\":1"),
            TRADE.replace("\"direction\":\"buy\",", ""),
            TRADE.replace("97000.5", "097000.5"),
            TRADE.replace("97000.5", "1e400"),
            TRADE.replace("97000.5", "0"),
            TRADE.replace("97000.5", "1e-320"),
            TRADE.replace("30289442", "3.0e7"),
            TRADE.replace("30289442", "99999999999999999999"),
            TRADE.replace("1764000000000", "-1"),
            TRADE.replace(":1}", ":1"),
            TRADE.replace("\"tick_direction\":1", "\"tick_direction\":70000"),
            TRADE.replace("}", ",}"),
        ];
        for text in &declined {
            assert!(trade(text).is_none(), "{text}");
        }
        // What serde reads of the escape, the scan never sees.
        let escaped = TradeView::read(&declined[0]).expect("serde reads it");
        assert_eq!(escaped.direction, "buy");
        assert!(TradeView::read(&declined[3]).is_err());
    }

    /// A number as JSON may write it.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            any::<i64>().prop_map(|i| i.to_string()),
            (0u64..1_000_000, 0u32..20, -30i32..30).prop_map(|(m, d, e)| format!(
                "{m}.{:0>width$}e{e}",
                m % 997,
                width = d as usize
            )),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?",
        ]
    }

    proptest! {
        #[test]
        fn it_reads_every_number_as_serde_does(price in number(), amount in number(), seq in number()) {
            let text = TRADE
                .replace("97000.5", &price)
                .replace("10.0", &amount)
                .replace("30289442", &seq);
            prop_assert!(agrees(&text));
        }

        #[test]
        fn it_reads_every_string_as_serde_does(id in "\\PC{0,12}", name in "[ -~]{0,12}") {
            let text = TRADE
                .replace("348079269", &id.replace('\\', "\\\\").replace('"', "\\\""))
                .replace("BTC-PERPETUAL", &name.replace('\\', "\\\\").replace('"', "\\\""));
            prop_assert!(agrees(&text));
        }

        #[test]
        fn no_text_makes_it_disagree(cut in 0usize..300, byte in any::<u8>()) {
            let mut bytes = TRADE.as_bytes().to_vec();
            let at = cut.min(bytes.len() - 1);
            bytes[at] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                prop_assert!(agrees(&text));
            }
            prop_assert!(agrees(&TRADE[..cut.min(TRADE.len())]));
        }
    }
}

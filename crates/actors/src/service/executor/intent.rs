//! Intents: what a strategy asks of the executor, one Redis stream entry each
//! (`orders:intents`), flat string fields so any language can write them:
//!
//! | action | fields |
//! |---|---|
//! | `place` | `label`, `instrument`, `side` (`buy`/`sell`), `amount`, `type` (`limit` default, `market`), `price` (limit), `time_in_force` (`good_til_cancelled` default, `good_til_day`, `fill_or_kill`, `immediate_or_cancel`), `post_only`, `reduce_only` (`true`/`false`), `valid_until` (ms since the epoch; optional) |
//! | `amend` | `label`, `price` and/or `amount` |
//! | `cancel` | `label` |
//! | `cancel_all` | `instrument` (absent: every instrument) |
//!
//! `label` is the client order id, unique per order for ever: 1 to 64
//! characters of `A-Z a-z 0-9 - _ . :`. It becomes the Deribit label.

use keel_deribit::private::{OrderType, Side, TimeInForce};

use crate::resource::redis::StreamEntry;

/// The stream strategies write intents to.
pub const INTENTS_STREAM: &str = "orders:intents";
/// The stream the executor writes events to.
pub const EVENTS_STREAM: &str = "orders:events";
/// Where intents that cannot be understood go, with the reason.
pub const DEAD_STREAM: &str = "orders:dead";

/// A new order.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    /// Client order id.
    pub label: String,
    /// Instrument name.
    pub instrument: String,
    /// Buy or sell.
    pub side: Side,
    /// Amount, in the instrument's unit.
    pub amount: f64,
    /// Limit or market.
    pub order_type: OrderType,
    /// Limit price.
    pub price: Option<f64>,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Only add liquidity (refused, never repriced, when it would cross).
    pub post_only: bool,
    /// Only reduce a position.
    pub reduce_only: bool,
    /// Not to reach the exchange after this (ms since the epoch): refused as
    /// `expired` if it passed before the order was sent, and the exchange's
    /// `valid_until` of every request for it.
    pub valid_until_ms: Option<i64>,
}

/// One intent.
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// Place an order.
    Place(Place),
    /// Change an open order's price or amount.
    Amend {
        /// The order's label.
        label: String,
        /// New price.
        price: Option<f64>,
        /// New amount.
        amount: Option<f64>,
    },
    /// Cancel an order.
    Cancel {
        /// The order's label.
        label: String,
    },
    /// Cancel every open order Keel placed (of one instrument).
    CancelAll {
        /// The instrument, or all.
        instrument: Option<String>,
    },
}

impl Intent {
    /// The label it is about, if any.
    pub fn label(&self) -> Option<&str> {
        match self {
            Intent::Place(p) => Some(&p.label),
            Intent::Amend { label, .. } | Intent::Cancel { label } => Some(label),
            Intent::CancelAll { .. } => None,
        }
    }
}

/// Why an entry is not an intent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    /// A required field is absent.
    #[error("field `{0}` is required")]
    Missing(&'static str),
    /// A field's value is not valid.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A field the action does not take (a typo must not be ignored).
    #[error("unknown field `{0}` for this action")]
    Unknown(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> IntentError {
    IntentError::Invalid {
        field,
        reason: reason.into(),
    }
}

struct Fields<'a>(&'a StreamEntry);

impl Fields<'_> {
    fn text(&self, name: &'static str) -> Result<Option<&str>, IntentError> {
        match self.0.field(name) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(|s| Some(s.trim()))
                .map_err(|_| invalid(name, "not UTF-8")),
        }
    }

    fn required(&self, name: &'static str) -> Result<&str, IntentError> {
        self.text(name)?
            .filter(|s| !s.is_empty())
            .ok_or(IntentError::Missing(name))
    }

    fn number(&self, name: &'static str) -> Result<Option<f64>, IntentError> {
        match self.text(name)? {
            None => Ok(None),
            Some(text) => match text.parse::<f64>() {
                Ok(n) if n.is_finite() && n > 0.0 => Ok(Some(n)),
                _ => Err(invalid(name, format!("`{text}` is not a positive number"))),
            },
        }
    }

    /// A time in milliseconds since the epoch.
    fn millis(&self, name: &'static str) -> Result<Option<i64>, IntentError> {
        match self.text(name)? {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<i64>() {
                Ok(ms) if ms > 0 => Ok(Some(ms)),
                _ => Err(invalid(
                    name,
                    format!("`{text}` is not a time in milliseconds since the epoch"),
                )),
            },
        }
    }

    fn flag(&self, name: &'static str) -> Result<bool, IntentError> {
        match self.text(name)? {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(invalid(name, format!("`{other}` is not true or false"))),
        }
    }

    fn only(&self, allowed: &[&str]) -> Result<(), IntentError> {
        match self
            .0
            .fields
            .iter()
            .find(|(name, _)| name != "action" && !allowed.contains(&name.as_str()))
        {
            Some((name, _)) => Err(IntentError::Unknown(name.clone())),
            None => Ok(()),
        }
    }
}

/// Whether `label` is a valid client order id.
pub fn valid_label(label: &str) -> bool {
    (1..=keel_deribit::private::MAX_LABEL).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn label(f: &Fields<'_>) -> Result<String, IntentError> {
    let label = f.required("label")?;
    if !valid_label(label) {
        return Err(invalid(
            "label",
            "1 to 64 characters of A-Z a-z 0-9 - _ . :",
        ));
    }
    Ok(label.to_owned())
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    f: &Fields<'_>,
    name: &'static str,
    default: T,
    expected: &str,
) -> Result<T, IntentError> {
    match f.text(name)? {
        None | Some("") => Ok(default),
        Some(text) => serde_json::from_value(serde_json::Value::String(text.to_owned()))
            .map_err(|_| invalid(name, format!("`{text}` is not one of {expected}"))),
    }
}

/// Reads one stream entry as an intent.
pub fn parse(entry: &StreamEntry) -> Result<Intent, IntentError> {
    let f = Fields(entry);
    match f.required("action")? {
        "place" => {
            f.only(&[
                "label",
                "instrument",
                "side",
                "amount",
                "type",
                "price",
                "time_in_force",
                "post_only",
                "reduce_only",
                "valid_until",
            ])?;
            let side = parse_enum(&f, "side", Side::Buy, "buy, sell")?;
            if f.text("side")?.is_none() {
                return Err(IntentError::Missing("side"));
            }
            let order_type = parse_enum(&f, "type", OrderType::Limit, "limit, market")?;
            let price = f.number("price")?;
            match order_type {
                OrderType::Limit if price.is_none() => return Err(IntentError::Missing("price")),
                OrderType::Limit => {}
                OrderType::Market if price.is_some() => {
                    return Err(invalid("price", "a market order takes no price"))
                }
                OrderType::Market => {}
                _ => return Err(invalid("type", "limit or market")),
            }
            let time_in_force = parse_enum(
                &f,
                "time_in_force",
                TimeInForce::GoodTilCancelled,
                "good_til_cancelled, good_til_day, fill_or_kill, immediate_or_cancel",
            )?;
            let post_only = f.flag("post_only")?;
            if post_only && order_type == OrderType::Market {
                return Err(invalid("post_only", "a market order cannot be post-only"));
            }
            let instrument = f.required("instrument")?;
            if instrument.len() > 64 || instrument.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(invalid("instrument", "not an instrument name"));
            }
            Ok(Intent::Place(Place {
                label: label(&f)?,
                instrument: instrument.to_owned(),
                side,
                amount: f.number("amount")?.ok_or(IntentError::Missing("amount"))?,
                order_type,
                price,
                time_in_force,
                post_only,
                reduce_only: f.flag("reduce_only")?,
                valid_until_ms: f.millis("valid_until")?,
            }))
        }
        "amend" => {
            f.only(&["label", "price", "amount"])?;
            let (price, amount) = (f.number("price")?, f.number("amount")?);
            if price.is_none() && amount.is_none() {
                return Err(IntentError::Missing("price or amount"));
            }
            Ok(Intent::Amend {
                label: label(&f)?,
                price,
                amount,
            })
        }
        "cancel" => {
            f.only(&["label"])?;
            Ok(Intent::Cancel { label: label(&f)? })
        }
        "cancel_all" => {
            f.only(&["instrument"])?;
            Ok(Intent::CancelAll {
                instrument: f
                    .text("instrument")?
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            })
        }
        other => Err(invalid(
            "action",
            format!("`{other}` is not place, amend, cancel or cancel_all"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: "1-0".into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn a_place_reads_with_its_defaults() {
        let intent = parse(&entry(&[
            ("action", "place"),
            ("label", "s1-0001"),
            ("instrument", "BTC-PERPETUAL"),
            ("side", "sell"),
            ("amount", "10"),
            ("price", "50000.5"),
        ]))
        .unwrap();
        let Intent::Place(p) = intent else {
            panic!("not a place")
        };
        assert_eq!(p.side, Side::Sell);
        assert_eq!(p.order_type, OrderType::Limit);
        assert_eq!(p.time_in_force, TimeInForce::GoodTilCancelled);
        assert_eq!((p.amount, p.price), (10.0, Some(50000.5)));
        assert!(!p.post_only && !p.reduce_only);
        assert_eq!(p.valid_until_ms, None);
    }

    #[test]
    fn bad_intents_say_what_is_wrong() {
        let place = [
            ("action", "place"),
            ("label", "x1"),
            ("instrument", "BTC-PERPETUAL"),
            ("side", "buy"),
            ("amount", "10"),
            ("price", "1"),
        ];
        let with = |key: &str, value: &str| {
            let mut fields: Vec<(&str, &str)> =
                place.iter().filter(|(k, _)| *k != key).copied().collect();
            if !value.is_empty() {
                fields.push((key, value));
            }
            parse(&entry(&fields))
        };
        assert!(with("action", "place").is_ok());
        assert_eq!(with("side", ""), Err(IntentError::Missing("side")));
        assert_eq!(with("price", ""), Err(IntentError::Missing("price")));
        for (key, value) in [
            ("side", "long"),
            ("amount", "-1"),
            ("amount", "NaN"),
            ("amount", "1e999"),
            ("price", "abc"),
            ("label", "has space"),
            ("label", &"x".repeat(65)),
            ("time_in_force", "forever"),
            ("post_only", "yes"),
            ("type", "stop_market"),
            ("action", "buy"),
            ("valid_until", "soon"),
            ("valid_until", "-5"),
        ] {
            assert!(
                matches!(with(key, value), Err(IntentError::Invalid { .. })),
                "{key}={value}: {:?}",
                with(key, value)
            );
        }
        assert_eq!(
            with("colour", "red"),
            Err(IntentError::Unknown("colour".into()))
        );
        assert!(parse(&entry(&[("action", "amend"), ("label", "a")])).is_err());
        assert_eq!(
            parse(&entry(&[("action", "cancel_all")])),
            Ok(Intent::CancelAll { instrument: None })
        );
        assert_eq!(parse(&entry(&[])), Err(IntentError::Missing("action")));
    }
}

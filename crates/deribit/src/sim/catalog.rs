//! The instruments the simulator lists: a plausible default set, or any names
//! given on the command line, with Deribit-style fields.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{to_ms, InstrumentInfo};

/// What the market generator needs about an instrument, and how it is listed.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub(super) info: InstrumentInfo,
    /// Where the price walk starts.
    pub(super) start_price: f64,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// `BTC-PERPETUAL`, `ETH-PERPETUAL`, two BTC futures, one ETH future and a BTC
/// call and put, with expiries on the last Fridays of the coming quarters.
pub(super) fn default_names(now: SystemTime) -> Vec<String> {
    let expiries = quarterly_expiries(now, 2);
    let mut names = vec!["BTC-PERPETUAL".to_owned(), "ETH-PERPETUAL".to_owned()];
    for e in &expiries {
        names.push(format!("BTC-{e}"));
    }
    names.push(format!("ETH-{}", expiries[0]));
    names.push(format!("BTC-{}-60000-C", expiries[0]));
    names.push(format!("BTC-{}-60000-P", expiries[0]));
    names
}

/// `DDMMMYY` of the last Friday of the next `n` quarter-end months.
fn quarterly_expiries(now: SystemTime, n: usize) -> Vec<String> {
    let days = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, _) = civil(days);
    let mut out = Vec::new();
    let (mut year, mut month) = (y, m);
    while out.len() < n {
        month += 1;
        if month > 12 {
            month = 1;
            year += 1;
        }
        if month % 3 == 0 {
            let day = last_friday(year, month);
            out.push(format!(
                "{day}{}{:02}",
                MONTHS[(month - 1) as usize],
                year % 100
            ));
        }
    }
    out
}

/// (year, month 1..=12, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn last_friday(year: i64, month: i64) -> i64 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let last = days_from_civil(ny, nm, 1) - 1;
    // 1970-01-01 was a Thursday: weekday 0 = Thursday, 1 = Friday.
    let back = (last.rem_euclid(7) - 1).rem_euclid(7);
    civil(last - back).2
}

fn parse_expiry(code: &str) -> Option<SystemTime> {
    let digits: String = code.chars().take_while(char::is_ascii_digit).collect();
    let day: i64 = digits.parse().ok()?;
    let rest = &code[digits.len()..];
    let month = MONTHS.iter().position(|m| rest.starts_with(m))? as i64 + 1;
    let year: i64 = rest.get(3..)?.parse().ok()?;
    let days = days_from_civil(2000 + year, month, day);
    // Deribit expires at 08:00 UTC.
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(days).ok()? * 86_400 + 8 * 3600))
}

/// The listing of `name`, in the style Deribit uses for its kind; `None` for a
/// name that is not `CUR-PERPETUAL`, `CUR-DDMMMYY` or `CUR-DDMMMYY-STRIKE-C|P`.
pub(super) fn spec(name: &str, instrument_id: u64, now: SystemTime) -> Option<Spec> {
    let parts: Vec<&str> = name.split('-').collect();
    let currency = *parts.first()?;
    if currency.is_empty() || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let base = if currency == "ETH" { 3_000.0 } else { 60_000.0 };
    let created = to_ms(now - Duration::from_secs(90 * 86_400));
    // As Deribit lists them today (nautilus's recorded `get_instrument` bodies).
    let common =
        |kind: &str, period: &str, tick: f64, size: f64, min: f64, expires: u64| InstrumentInfo {
            instrument_name: name.to_owned(),
            instrument_id: Some(instrument_id),
            kind: kind.into(),
            instrument_type: Some("reversed".into()),
            future_type: (kind == "future").then(|| "reversed".into()),
            base_currency: currency.into(),
            quote_currency: "USD".into(),
            counter_currency: Some("USD".into()),
            settlement_currency: Some(currency.into()),
            settlement_period: Some(period.into()),
            tick_size: tick,
            tick_size_steps: Some(Vec::new()),
            contract_size: size,
            min_trade_amount: min,
            creation_timestamp: created,
            expiration_timestamp: Some(expires),
            is_active: true,
            option_type: None,
            strike: None,
            price_index: Some(format!("{}_usd", currency.to_ascii_lowercase())),
            maker_commission: 0.0,
            taker_commission: 0.0005,
            block_trade_commission: Some(0.00025),
            block_trade_min_trade_amount: Some(200_000.0),
            block_trade_tick_size: Some(0.01),
            max_liquidation_commission: Some(0.0075),
            max_leverage: Some(50.0),
            max_non_default_leverage: (period == "perpetual").then_some(5.0),
        };
    let (perp_tick, fut_tick) = if currency == "ETH" {
        (0.05, 0.25)
    } else {
        (0.5, 2.5)
    };
    let size = if currency == "ETH" { 1.0 } else { 10.0 };
    match parts.as_slice() {
        [_, "PERPETUAL"] => Some(Spec {
            info: common(
                "future",
                "perpetual",
                perp_tick,
                size,
                size,
                crate::model::NEVER_EXPIRES_MS,
            ),
            start_price: base,
        }),
        [_, expiry] => {
            let at = parse_expiry(expiry)?;
            Some(Spec {
                info: common("future", "month", fut_tick, size, size, to_ms(at)),
                start_price: base * 1.01,
            })
        }
        [_, expiry, strike, side @ ("C" | "P")] => {
            let at = parse_expiry(expiry)?;
            let strike: f64 = strike.parse().ok()?;
            let mut info = common("option", "month", 0.0005, 1.0, 0.1, to_ms(at));
            info.option_type = Some(if *side == "C" { "call" } else { "put" }.into());
            info.strike = Some(strike);
            info.max_leverage = Some(1.0);
            info.quote_currency = currency.into();
            info.maker_commission = 0.0003;
            info.taker_commission = 0.0003;
            info.block_trade_min_trade_amount = Some(25.0);
            info.block_trade_tick_size = Some(0.0001);
            Some(Spec {
                info,
                start_price: 0.05,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_look_like_deribit_and_parse_back() {
        // 2026-11-23
        let now = UNIX_EPOCH + Duration::from_secs(1_795_392_000);
        let names = default_names(now);
        assert_eq!(names[0], "BTC-PERPETUAL");
        assert_eq!(names[2], "BTC-25DEC26", "last Friday of December 2026");
        assert_eq!(names[3], "BTC-26MAR27", "last Friday of March 2027");
        assert!(names.contains(&"BTC-25DEC26-60000-C".to_owned()));
        for (i, name) in names.iter().enumerate() {
            let spec = spec(name, i as u64, now).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(&spec.info.instrument_name, name);
        }
        let option = spec("BTC-25DEC26-60000-P", 9, now).unwrap().info;
        assert_eq!(option.kind, "option");
        assert_eq!(option.option_type.as_deref(), Some("put"));
        // 2026-12-25T08:00:00Z
        assert_eq!(option.expiration_timestamp, Some(1_798_185_600_000));
    }

    #[test]
    fn unknown_shapes_are_refused() {
        let now = SystemTime::now();
        for bad in [
            "",
            "btc-PERPETUAL",
            "BTC",
            "BTC-32FOO26",
            "BTC-25DEC26-X-C",
            "BTC-25DEC26-1-Q",
        ] {
            assert!(spec(bad, 0, now).is_none(), "{bad}");
        }
    }
}

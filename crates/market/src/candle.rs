//! OHLCV candles.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A candle's length, in whole minutes (Deribit's TradingView resolutions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Resolution {
    minutes: u32,
}

impl Resolution {
    /// One-minute candles.
    pub const ONE_MINUTE: Self = Self { minutes: 1 };

    /// A resolution of `minutes` minutes (at least one).
    pub fn minutes(minutes: u32) -> Option<Self> {
        (minutes > 0).then_some(Self { minutes })
    }

    /// The candle length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.minutes) * 60)
    }

    /// Length in minutes.
    pub fn as_minutes(self) -> u32 {
        self.minutes
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minutes {
            m if m % 1440 == 0 => write!(f, "{}d", m / 1440),
            m if m % 60 == 0 => write!(f, "{}h", m / 60),
            m => write!(f, "{m}m"),
        }
    }
}

/// Text that is not a candle resolution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a resolution such as 1m, 5m, 1h or 1d")]
pub struct NotAResolution(pub String);

impl TryFrom<String> for Resolution {
    type Error = NotAResolution;

    /// Accepts `1m`, `5m`, `1h`, `1d` (and plain minutes, `15`).
    fn try_from(text: String) -> Result<Self, NotAResolution> {
        let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(at) => text.split_at(at),
            None => (text.as_str(), "m"),
        };
        let Ok(n) = number.parse::<u32>() else {
            return Err(NotAResolution(text));
        };
        let minutes = match unit {
            "m" => Some(n),
            "h" => n.checked_mul(60),
            "d" => n.checked_mul(1440),
            _ => None,
        };
        minutes.and_then(Self::minutes).ok_or(NotAResolution(text))
    }
}

impl From<Resolution> for String {
    fn from(r: Resolution) -> String {
        r.to_string()
    }
}

/// One OHLCV bar of one instrument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    /// The instrument whose trades the candle folds.
    pub instrument_name: String,
    /// Bar length.
    pub resolution: Resolution,
    /// Start of the bar.
    pub bucket: SystemTime,
    /// First trade price.
    pub open: f64,
    /// Highest trade price.
    pub high: f64,
    /// Lowest trade price.
    pub low: f64,
    /// Last trade price.
    pub close: f64,
    /// Sum of trade amounts.
    pub volume: f64,
    /// Number of trades.
    pub trades: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_round_trip_through_text() {
        for (text, minutes) in [("1m", 1), ("5m", 5), ("1h", 60), ("1d", 1440), ("15", 15)] {
            let r = Resolution::try_from(text.to_owned()).unwrap();
            assert_eq!(r.as_minutes(), minutes, "{text}");
            assert_eq!(Resolution::try_from(r.to_string()).unwrap(), r);
        }
        for bad in ["0m", "m", "5x", "", "-1m", "99999999999h"] {
            assert!(Resolution::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}

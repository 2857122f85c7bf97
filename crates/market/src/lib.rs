//! Market data as Keel stores it, independent of any exchange's wire format.
#![warn(missing_docs, unreachable_pub)]

mod candle;
mod instrument;
mod trade;

pub mod gap;
pub use gap::Gap;

pub use candle::{Candle, NotAResolution, Resolution};
pub use instrument::Instrument;
pub use trade::{Direction, Trade};

use std::time::{SystemTime, UNIX_EPOCH};

/// Latest time RFC 3339 can write (9999-12-31T23:59:59Z), in seconds since the epoch.
const RFC3339_MAX_SECS: u64 = 253_402_300_799;

/// A time for log lines and message summaries: RFC 3339 where it can be written
/// that way, else milliseconds since the epoch. Never fails, whatever the input.
pub fn describe_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= RFC3339_MAX_SECS => humantime::format_rfc3339_millis(t).to_string(),
        Ok(d) => format!("{} ms since the epoch", d.as_millis()),
        Err(before) => format!("{} ms before the epoch", before.duration().as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn any_time_can_be_described() {
        let epoch = UNIX_EPOCH;
        assert_eq!(describe_time(epoch), "1970-01-01T00:00:00.000Z");
        let far = epoch + Duration::from_millis(u64::MAX / 4);
        assert_eq!(
            describe_time(far),
            format!("{} ms since the epoch", u64::MAX / 4)
        );
        let before = epoch - Duration::from_millis(5);
        assert_eq!(describe_time(before), "5 ms before the epoch");
    }
}

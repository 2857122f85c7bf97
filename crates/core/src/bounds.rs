//! Valid ranges of configuration values, checked before anything starts.
//!
//! Every section's `problems()` runs its values through a [`Check`], which
//! collects `(key, what is expected)` pairs: `keel check` and every command
//! print them all at once and exit 78 before anything connects.

use std::time::Duration;

/// One second, the shortest interval a periodic job may have.
pub const SECOND: Duration = Duration::from_secs(1);
/// One minute.
pub const MINUTE: Duration = Duration::from_secs(60);
/// One hour.
pub const HOUR: Duration = Duration::from_secs(3600);
/// One day.
pub const DAY: Duration = Duration::from_secs(86_400);
/// The longest retention Keel accepts: a hundred years of 365.25 days.
pub const CENTURY: Duration = Duration::from_secs(36_525 * 86_400);

/// Collects the problems of one section.
#[derive(Debug, Default)]
#[must_use]
pub struct Check {
    problems: Vec<(String, String)>,
}

impl Check {
    /// An empty check.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem.
    pub fn push(&mut self, key: impl Into<String>, expected: impl Into<String>) -> &mut Self {
        self.problems.push((key.into(), expected.into()));
        self
    }

    /// Records a nested section's problems under `prefix.`.
    pub fn nested<K: Into<String>>(
        &mut self,
        prefix: &str,
        problems: impl IntoIterator<Item = (K, String)>,
    ) -> &mut Self {
        for (key, expected) in problems {
            self.problems
                .push((format!("{prefix}.{}", key.into()), expected));
        }
        self
    }

    /// `value` must lie in `min..=max`.
    pub fn duration(
        &mut self,
        key: &str,
        value: Duration,
        min: Duration,
        max: Duration,
    ) -> &mut Self {
        if value < min || value > max {
            self.push(key, format!("a duration {}", range(min, max)));
        }
        self
    }

    /// `value` must lie in `min..=max`.
    pub fn count(&mut self, key: &str, value: u64, min: u64, max: u64) -> &mut Self {
        if value < min || value > max {
            self.push(key, format!("a whole number from {min} to {max}"));
        }
        self
    }

    /// `value` must be an absolute URL of one of `schemes` with a host and no
    /// credentials. The value is never echoed: it may hold a secret.
    pub fn url(&mut self, key: &str, value: &str, schemes: &[&str]) -> &mut Self {
        if let Err(expected) = url_problem(value, schemes) {
            self.push(key, expected);
        }
        self
    }

    /// A list of instrument names: non-empty, each well-formed, no repeats.
    pub fn instruments(&mut self, key: &str, names: &[String]) -> &mut Self {
        if names.is_empty() {
            self.push(key, "at least one instrument");
        }
        for (i, name) in names.iter().enumerate() {
            if !is_instrument_name(name) {
                self.push(
                    key,
                    format!(
                        "instrument names of 1 to 64 letters, digits, `-` or `_` \
                         (BTC-PERPETUAL), not {name:?}"
                    ),
                );
            } else if names[..i].contains(name) {
                self.push(key, format!("each instrument once; {name} is repeated"));
            }
        }
        self
    }

    /// The problems found.
    pub fn finish(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.problems)
    }
}

/// Whether `name` can be an exchange instrument: what a channel name can carry.
pub fn is_instrument_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn range(min: Duration, max: Duration) -> String {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if min.is_zero() {
        format!("of at most {}", show(max))
    } else {
        format!("from {} to {}", show(min), show(max))
    }
}

fn url_problem(value: &str, schemes: &[&str]) -> Result<(), String> {
    let wanted = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    let parsed = url::Url::parse(value).map_err(|e| format!("a {wanted} URL ({e})"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!("a {wanted} URL, not {}://", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("a {wanted} URL with a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "a {wanted} URL without credentials (they would be logged and shown)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_have_their_scheme_and_a_host_and_no_credentials() {
        let ws = &["ws", "wss"];
        assert!(url_problem("wss://www.deribit.com/ws/api/v2", ws).is_ok());
        for bad in [
            "ws://",
            "not a url",
            "http://x/",
            "ws://user:pass@x/",
            "ws://u@x",
        ] {
            let err = url_problem(bad, ws).unwrap_err();
            assert!(!err.contains("pass@"), "{err}");
        }
    }

    #[test]
    fn instrument_names() {
        let mut c = Check::new();
        let ok = ["BTC-PERPETUAL".to_owned(), "ETH_USDC".to_owned()];
        assert!(c.instruments("i", &ok).finish().is_empty());
        for bad in [
            vec![],
            vec![String::new()],
            vec!["a.b".into()],
            vec!["X".into(), "X".into()],
        ] {
            assert_eq!(c.instruments("i", &bad).finish().len(), 1, "{bad:?}");
        }
    }

    #[test]
    fn ranges_are_inclusive_and_named() {
        let mut c = Check::new();
        assert!(c.duration("d", SECOND, SECOND, HOUR).finish().is_empty());
        let p = c.duration("d", Duration::ZERO, SECOND, HOUR).finish();
        assert_eq!(p[0].1, "a duration from 1s to 1h");
        assert_eq!(
            c.count("n", 0, 1, 10).finish()[0].1,
            "a whole number from 1 to 10"
        );
    }
}

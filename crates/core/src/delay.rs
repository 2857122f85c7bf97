//! The delay policy behind every restart and retry: exponential growth with jitter.
//!
//! This is the only module that touches the `backoff` crate (flagged unmaintained
//! upstream), so swapping it means editing this file alone.

use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;
use serde::{Deserialize, Serialize};

/// Bounds of an exponential delay with jitter, as written in configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// The first delay (before jitter).
    #[serde(with = "humantime_serde", default = "default_min")]
    pub min: Duration,
    /// No delay is ever longer than this, jitter included.
    #[serde(with = "humantime_serde", default = "default_max")]
    pub max: Duration,
    /// Growth factor between consecutive delays (>= 1).
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Random spread around each delay as a fraction (0 = none, 0.5 = ±50%).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

fn default_min() -> Duration {
    Duration::from_millis(100)
}
fn default_max() -> Duration {
    Duration::from_secs(30)
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.2
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min: default_min(),
            max: default_max(),
            multiplier: default_multiplier(),
            jitter: default_jitter(),
        }
    }
}

impl BackoffConfig {
    /// Every problem with these bounds, as `(field, what is expected)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.min.is_zero() || self.min > crate::bounds::HOUR {
            problems.push(("min", "a duration from 1ns to 1h".to_owned()));
        }
        if self.max > crate::bounds::HOUR {
            problems.push(("max", "a duration of at most 1h".to_owned()));
        }
        if self.max < self.min {
            problems.push((
                "max",
                format!("a duration of at least min ({:?})", self.min),
            ));
        }
        if !(self.multiplier.is_finite() && (1.0..=100.0).contains(&self.multiplier)) {
            problems.push(("multiplier", "a number from 1 to 100".to_owned()));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            problems.push(("jitter", "a fraction between 0 and 1".to_owned()));
        }
        problems
    }

    /// A fresh delay sequence with these bounds.
    pub fn sequence(&self) -> Backoff {
        Backoff::new(self)
    }
}

/// One running sequence of delays; call [`Backoff::reset`] after a success.
#[derive(Debug)]
pub struct Backoff {
    inner: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    fn new(config: &BackoffConfig) -> Self {
        let inner = ExponentialBackoff {
            current_interval: config.min,
            initial_interval: config.min,
            randomization_factor: config.jitter,
            multiplier: config.multiplier,
            max_interval: config.max,
            // Keel never gives up on elapsed time: restart intensity and retry
            // budgets decide that.
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        Self {
            inner,
            max: config.max,
        }
    }

    /// The next delay: `min * multiplier^n` with jitter, never above `max`.
    pub fn next_delay(&mut self) -> Duration {
        // With no elapsed-time limit the sequence never ends; `max` is the fallback
        // only to keep this total.
        let delay = self.inner.next_backoff().unwrap_or(self.max);
        delay.min(self.max)
    }

    /// Starts the sequence over at `min`, after a success or a stable run.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: f64) -> BackoffConfig {
        BackoffConfig {
            min: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn without_jitter_delays_double_then_cap() {
        let mut b = config(0.0).sequence();
        let delays: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn jitter_stays_within_its_band_and_under_max() {
        for _ in 0..200 {
            let mut b = config(0.5).sequence();
            let mut base = 100.0_f64;
            for _ in 0..8 {
                let d = b.next_delay().as_secs_f64() * 1000.0;
                assert!(d >= base * 0.5 - 1.0, "{d} below band of {base}");
                assert!(
                    d <= (base * 1.5 + 1.0).min(2000.0),
                    "{d} above band of {base}"
                );
                base = (base * 2.0).min(2000.0);
            }
        }
    }

    #[test]
    fn jitter_actually_spreads_delays() {
        let firsts: std::collections::HashSet<u128> = (0..50)
            .map(|_| config(0.5).sequence().next_delay().as_micros())
            .collect();
        assert!(
            firsts.len() > 10,
            "only {} distinct first delays",
            firsts.len()
        );
    }

    #[test]
    fn reset_starts_over_at_min() {
        let mut b = config(0.0).sequence();
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn bad_bounds_are_all_reported() {
        let bad = BackoffConfig {
            min: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 0.5,
            jitter: 1.5,
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["min", "multiplier", "jitter"]);
        assert!(BackoffConfig::default().problems().is_empty());
    }
}

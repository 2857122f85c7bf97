//! The circuit breaker in front of Redis: a pure state machine, driven with
//! explicit times so it can be tested without a clock or a server.
//!
//! `closed` lets calls through and watches connection-class failures; too many in
//! a row, or too high a rate over a window, opens it. `open` fails calls at once
//! (no network); after the open interval one probe goes through (`half_open`):
//! success closes the circuit, failure re-opens it for a longer interval.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use keel_core::delay::{Backoff, BackoffConfig};
use keel_core::stats::{Family, Samples, Stats};
use parking_lot::Mutex;

/// When the circuit opens and for how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// This many connection-class failures in a row open the circuit.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// A failure rate at or above this over `window` opens it too...
    #[serde(default = "default_rate")]
    pub failure_rate: f64,
    /// ...measured over this sliding window...
    #[serde(with = "humantime_serde", default = "default_window")]
    pub window: Duration,
    /// ...once at least this many calls fell in it.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// How long it stays open before a probe; grows after each failed probe.
    #[serde(default = "default_open_backoff")]
    pub open_for: BackoffConfig,
}

fn default_consecutive() -> u32 {
    5
}
fn default_rate() -> f64 {
    0.5
}
fn default_window() -> Duration {
    Duration::from_secs(10)
}
fn default_min_calls() -> u32 {
    20
}
fn default_open_backoff() -> BackoffConfig {
    BackoffConfig {
        min: Duration::from_millis(500),
        max: Duration::from_secs(30),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive(),
            failure_rate: default_rate(),
            window: default_window(),
            min_calls: default_min_calls(),
            open_for: default_open_backoff(),
        }
    }
}

impl BreakerConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        use keel_core::bounds::{Check, HOUR, SECOND};
        let mut check = Check::new();
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            check.push("failure_rate", "a fraction above 0, at most 1");
        }
        check
            .count(
                "consecutive_failures",
                self.consecutive_failures.into(),
                1,
                10_000,
            )
            .count("min_calls", self.min_calls.into(), 1, 1_000_000)
            .duration("window", self.window, SECOND, HOUR)
            .nested("open_for", self.open_for.problems())
            .finish()
    }
}

/// The breaker's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe is allowed through.
    HalfOpen,
}

impl BreakerState {
    /// The spelling in the registry and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Refused without touching the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Until the next probe may go (zero while a probe is in flight).
    pub retry_after: Duration,
}

/// A call the breaker let through; report its outcome with [`Breaker::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "report the call's outcome with Breaker::record"]
pub enum Permit {
    /// An ordinary call while closed.
    Call,
    /// The one probe of a half-open circuit.
    Probe,
}

/// How a call that went through ended, as far as the breaker cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered (a command error such as WRONGTYPE is an answer too).
    Answered,
    /// A connection-class failure: I/O, timeout, dropped connection, LOADING,
    /// BUSY, TRYAGAIN, MASTERDOWN.
    Failed,
}

/// What the registry shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BreakerSnapshot {
    /// Current position.
    pub state: BreakerState,
    /// Connection-class failures in a row.
    pub consecutive_failures: u32,
    /// State changes so far.
    pub transitions: u64,
    /// Times it opened.
    pub opened: u64,
    /// Calls refused while open.
    pub rejected: u64,
}

const BREAKER_STATE: Family = Family::gauge(
    "keel_redis_breaker_state",
    "1 for the circuit breaker's current state.",
);
const TRANSITIONS: Family = Family::counter(
    "keel_redis_breaker_transitions_total",
    "Circuit breaker state changes.",
);
const REJECTED: Family = Family::counter(
    "keel_redis_breaker_rejected_calls_total",
    "Calls refused while the circuit was open.",
);

/// The `breaker` detail, read when the registry is.
pub(super) struct BreakerView(pub(super) Weak<Mutex<Breaker>>);

impl Stats for BreakerView {
    fn show(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.0.upgrade()?.lock().snapshot()).ok()
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        let Some(breaker) = self.0.upgrade() else {
            return;
        };
        let b = breaker.lock().snapshot();
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            let current = f64::from(u8::from(b.state == state));
            out.add(
                &BREAKER_STATE,
                &[("actor", actor), ("state", state.as_str())],
                current,
            );
        }
        out.add(&TRANSITIONS, &[("actor", actor)], b.transitions as f64);
        out.add(&REJECTED, &[("actor", actor)], b.rejected as f64);
    }
}

/// The breaker itself.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    open_until: Option<Instant>,
    probe_in_flight: bool,
    consecutive: u32,
    recent: VecDeque<(Instant, bool)>,
    open_for: Backoff,
    transitions: u64,
    opened: u64,
    rejected: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            open_for: config.open_for.sequence(),
            config,
            state: BreakerState::Closed,
            open_until: None,
            probe_in_flight: false,
            consecutive: 0,
            recent: VecDeque::new(),
            transitions: 0,
            opened: 0,
            rejected: 0,
        }
    }

    /// Asks to make a call at `now`.
    pub fn admit(&mut self, now: Instant) -> Result<Permit, Rejected> {
        match self.state {
            BreakerState::Closed => Ok(Permit::Call),
            BreakerState::Open => {
                let until = self.open_until.unwrap_or(now);
                if now >= until {
                    self.transition(BreakerState::HalfOpen);
                    self.probe_in_flight = true;
                    Ok(Permit::Probe)
                } else {
                    self.rejected += 1;
                    Err(Rejected {
                        retry_after: until - now,
                    })
                }
            }
            BreakerState::HalfOpen if !self.probe_in_flight => {
                self.probe_in_flight = true;
                Ok(Permit::Probe)
            }
            BreakerState::HalfOpen => {
                self.rejected += 1;
                Err(Rejected {
                    retry_after: Duration::ZERO,
                })
            }
        }
    }

    /// Reports how a permitted call ended.
    pub fn record(&mut self, now: Instant, permit: Permit, outcome: Outcome) {
        match (permit, outcome) {
            (Permit::Probe, Outcome::Answered) => {
                self.probe_in_flight = false;
                self.consecutive = 0;
                self.recent.clear();
                self.open_for.reset();
                self.transition(BreakerState::Closed);
            }
            (Permit::Probe, Outcome::Failed) => {
                self.probe_in_flight = false;
                self.open(now);
            }
            // Calls admitted before the circuit opened may still report; they no
            // longer decide anything.
            (Permit::Call, _) if self.state != BreakerState::Closed => {}
            (Permit::Call, outcome) => {
                let failed = outcome == Outcome::Failed;
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                self.recent.push_back((now, failed));
                while let Some(&(at, _)) = self.recent.front() {
                    if now.saturating_duration_since(at) > self.config.window {
                        self.recent.pop_front();
                    } else {
                        break;
                    }
                }
                if self.consecutive >= self.config.consecutive_failures || self.rate_exceeded() {
                    self.open(now);
                }
            }
        }
    }

    /// A check outside the breaker (the resource's health check) reached the
    /// server at `now`: an open circuit lets its next call through as the probe
    /// at once, instead of waiting out an open interval that grew long during an
    /// outage.
    pub fn server_answered(&mut self, now: Instant) {
        if self.state == BreakerState::Open {
            self.open_until = Some(now);
        }
    }

    fn rate_exceeded(&self) -> bool {
        let calls = self.recent.len();
        if calls < self.config.min_calls as usize || calls == 0 {
            return false;
        }
        let failures = self.recent.iter().filter(|(_, failed)| *failed).count();
        failures as f64 / calls as f64 >= self.config.failure_rate
    }

    fn open(&mut self, now: Instant) {
        self.open_until = Some(now + self.open_for.next_delay());
        self.opened += 1;
        self.consecutive = 0;
        self.recent.clear();
        self.transition(BreakerState::Open);
    }

    fn transition(&mut self, to: BreakerState) {
        if self.state != to {
            tracing::info!(from = ?self.state, ?to, "Redis circuit breaker changed state.");
            self.state = to;
            self.transitions += 1;
        }
    }

    /// The current position.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Figures for the registry.
    pub fn snapshot(&self) -> BreakerSnapshot {
        BreakerSnapshot {
            state: self.state,
            consecutive_failures: self.consecutive,
            transitions: self.transitions,
            opened: self.opened,
            rejected: self.rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: 1000 * MS,
            min_calls: 10,
            open_for: BackoffConfig {
                min: 100 * MS,
                max: 400 * MS,
                multiplier: 2.0,
                jitter: 0.0,
            },
        }
    }

    fn call(b: &mut Breaker, now: Instant, outcome: Outcome) {
        let permit = b.admit(now).expect("admitted");
        b.record(now, permit, outcome);
    }

    #[test]
    fn consecutive_failures_open_it_and_successes_reset_the_count() {
        let t = Instant::now();
        let mut b = Breaker::new(config());
        call(&mut b, t, Outcome::Failed);
        call(&mut b, t, Outcome::Failed);
        call(&mut b, t, Outcome::Answered);
        call(&mut b, t, Outcome::Failed);
        call(&mut b, t, Outcome::Failed);
        assert_eq!(b.state(), BreakerState::Closed);
        call(&mut b, t, Outcome::Failed);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.snapshot().opened, 1);
    }

    #[test]
    fn a_failure_rate_over_the_window_opens_it() {
        let t = Instant::now();
        let mut b = Breaker::new(config());
        // Alternating: never 3 in a row, but 50 % once 10 calls are in the window.
        for i in 0..9 {
            let outcome = if i % 2 == 0 {
                Outcome::Failed
            } else {
                Outcome::Answered
            };
            call(&mut b, t + i * MS, outcome);
            assert_eq!(b.state(), BreakerState::Closed, "call {i}");
        }
        call(&mut b, t + 9 * MS, Outcome::Answered);
        assert_eq!(b.state(), BreakerState::Open, "5 failures of 10");
    }

    #[test]
    fn old_calls_leave_the_window() {
        let t = Instant::now();
        let mut b = Breaker::new(config());
        for i in 0..9 {
            call(
                &mut b,
                t + i * MS,
                if i % 2 == 0 {
                    Outcome::Failed
                } else {
                    Outcome::Answered
                },
            );
        }
        // Two seconds later the window holds only the new call.
        call(&mut b, t + 2000 * MS, Outcome::Answered);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_fails_fast_then_lets_one_probe_through() {
        let t = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            call(&mut b, t, Outcome::Failed);
        }
        let rejected = b.admit(t + 40 * MS).unwrap_err();
        assert_eq!(rejected.retry_after, 60 * MS);
        assert_eq!(b.snapshot().rejected, 1);

        let probe = b.admit(t + 100 * MS).unwrap();
        assert_eq!(probe, Permit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit(t + 101 * MS).is_err(), "only one probe at a time");
        b.record(t + 102 * MS, probe, Outcome::Answered);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(t + 103 * MS), Ok(Permit::Call));
    }

    #[test]
    fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
        let t = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            call(&mut b, t, Outcome::Failed);
        }
        // Open intervals: 100, then 200, 400, 400 ms after each failed probe.
        let mut now = t;
        for expected in [100, 200, 400, 400] {
            assert!(b.admit(now + (expected - 1) * MS).is_err());
            now += expected * MS;
            let probe = b.admit(now).unwrap();
            b.record(now, probe, Outcome::Failed);
            assert_eq!(b.state(), BreakerState::Open);
        }
        // A success after all that starts over at the shortest interval.
        now += 400 * MS;
        let probe = b.admit(now).unwrap();
        b.record(now, probe, Outcome::Answered);
        for _ in 0..3 {
            call(&mut b, now, Outcome::Failed);
        }
        assert!(b.admit(now + 99 * MS).is_err());
        assert!(b.admit(now + 100 * MS).is_ok());
    }

    #[test]
    fn a_health_check_that_reached_the_server_lets_the_probe_go_at_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        for i in 0..3 {
            call(&mut b, t0 + Duration::from_millis(i), Outcome::Failed);
        }
        assert_eq!(b.state(), BreakerState::Open);
        let later = t0 + Duration::from_millis(10);
        assert!(b.admit(later).is_err(), "still open");
        b.server_answered(later);
        assert_eq!(b.admit(later), Ok(Permit::Probe));
        b.record(later, Permit::Probe, Outcome::Answered);
        assert_eq!(b.state(), BreakerState::Closed);
        // A closed breaker is left alone.
        b.server_answered(later);
        assert_eq!(b.admit(later), Ok(Permit::Call));
    }

    #[test]
    fn a_command_error_is_an_answer_not_a_failure() {
        let t = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..100 {
            call(&mut b, t, Outcome::Answered);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().transitions, 0);
    }

    #[test]
    fn late_reports_from_before_the_opening_change_nothing() {
        let t = Instant::now();
        let mut b = Breaker::new(config());
        let late = b.admit(t).unwrap();
        for _ in 0..3 {
            call(&mut b, t, Outcome::Failed);
        }
        b.record(t, late, Outcome::Answered);
        assert_eq!(b.state(), BreakerState::Open);
    }
}

//! Restart intensity: how many restarts a supervisor allows within a sliding period.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The restarts of the last `period`, to decide when a supervisor gives up.
#[derive(Debug)]
pub(super) struct IntensityWindow {
    max_restarts: u32,
    period: Duration,
    restarts: VecDeque<Instant>,
}

impl IntensityWindow {
    pub(super) fn new(max_restarts: u32, period: Duration) -> Self {
        Self {
            max_restarts,
            period,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; true when that makes more than `max_restarts`
    /// within the period, i.e. when the supervisor must give up.
    pub(super) fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= self.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() > self.max_restarts as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn allows_exactly_max_restarts_within_the_period() {
        let t0 = Instant::now();
        let mut w = IntensityWindow::new(3, 10 * SEC);
        assert!(!w.record(t0));
        assert!(!w.record(t0 + SEC));
        assert!(!w.record(t0 + 2 * SEC));
        assert!(
            w.record(t0 + 3 * SEC),
            "the fourth restart within 10s exceeds 3"
        );
    }

    #[test]
    fn restarts_older_than_the_period_are_forgotten() {
        let t0 = Instant::now();
        let mut w = IntensityWindow::new(2, 10 * SEC);
        assert!(!w.record(t0));
        assert!(!w.record(t0 + 5 * SEC));
        // t0 has left the window by t0 + 10s, so this is only the second in it.
        assert!(!w.record(t0 + 10 * SEC));
        assert!(w.record(t0 + 11 * SEC));
    }

    #[test]
    fn zero_max_restarts_gives_up_on_the_first() {
        let mut w = IntensityWindow::new(0, 10 * SEC);
        assert!(w.record(Instant::now()));
    }

    #[test]
    fn steady_slow_failures_never_give_up() {
        let t0 = Instant::now();
        let mut w = IntensityWindow::new(1, 10 * SEC);
        for i in 0..100 {
            assert!(!w.record(t0 + i * 11 * SEC));
        }
    }
}

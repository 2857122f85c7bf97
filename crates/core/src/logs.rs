//! Bounded logging of what outside input can repeat without end (a malformed
//! frame, a rejected trade, a dead-lettered entry, a refused request): no input
//! can make the log grow faster than the configured rate.
//!
//! Each such warning site keeps a [`Repeats`]: the first lines of every minute
//! are logged, the rest are counted and the count (`suppressed`) rides on the
//! next line logged. The counters in the registry and `/metrics` keep the full
//! figures either way.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Lines each site may log per minute unless configured otherwise.
pub const DEFAULT_REPEATS_PER_MINUTE: u32 = 10;

static PER_MINUTE: AtomicU32 = AtomicU32::new(DEFAULT_REPEATS_PER_MINUTE);

const WINDOW: Duration = Duration::from_secs(60);

/// Sets how many lines each repeating warning site may log per minute (the
/// `[log] repeats_per_minute` setting), for the whole process.
pub fn set_repeats_per_minute(lines: u32) {
    PER_MINUTE.store(lines, Ordering::Relaxed);
}

/// One site's allowance.
#[derive(Debug)]
pub struct Repeats {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for Repeats {
    fn default() -> Self {
        Self {
            state: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }
}

impl Repeats {
    /// Calls `log` with the number of lines suppressed since the last one when
    /// this site may log now; otherwise counts one more suppressed line.
    pub fn warn(&self, log: impl FnOnce(u64)) {
        let suppressed = {
            let mut window = self.state.lock();
            let now = Instant::now();
            if now.duration_since(window.started) >= WINDOW {
                window.started = now;
                window.logged = 0;
            }
            if window.logged >= PER_MINUTE.load(Ordering::Relaxed) {
                window.suppressed += 1;
                return;
            }
            window.logged += 1;
            std::mem::take(&mut window.suppressed)
        };
        log(suppressed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_allowance_and_the_rest_is_counted() {
        let site = Repeats::default();
        let mut logged = 0;
        for _ in 0..1_000_000 {
            site.warn(|_| logged += 1);
        }
        assert_eq!(logged, DEFAULT_REPEATS_PER_MINUTE);
        assert_eq!(
            site.state.lock().suppressed,
            1_000_000 - u64::from(DEFAULT_REPEATS_PER_MINUTE)
        );
        // A new window logs again and says how many were left out.
        site.state.lock().started -= WINDOW;
        let mut said = None;
        site.warn(|suppressed| said = Some(suppressed));
        assert_eq!(
            said,
            Some(1_000_000 - u64::from(DEFAULT_REPEATS_PER_MINUTE))
        );
    }
}

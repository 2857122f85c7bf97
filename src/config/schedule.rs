//! The `[schedule]` section: which tasks `keel run` starts on an interval.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[schedule]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Whether `keel run` schedules tasks at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sync instruments as soon as the daemon starts.
    #[serde(default = "yes")]
    pub instruments_at_boot: bool,
    /// Instrument sync interval.
    #[serde(with = "humantime_serde", default = "hour")]
    pub instruments_every: Duration,
    /// Janitor interval.
    #[serde(with = "humantime_serde", default = "hour")]
    pub janitor_every: Duration,
    /// Gap repair interval.
    #[serde(with = "humantime_serde", default = "five_minutes")]
    pub gap_repair_every: Duration,
    /// How long a running task may take to stop when the daemon shuts down.
    #[serde(with = "humantime_serde", default = "ten_seconds")]
    pub task_shutdown_timeout: Duration,
}

fn yes() -> bool {
    true
}
fn hour() -> Duration {
    Duration::from_secs(3600)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

impl ScheduleConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        use keel_core::bounds::{Check, DAY, HOUR, SECOND};
        Check::new()
            .duration(
                "instruments_every",
                self.instruments_every,
                SECOND,
                30 * DAY,
            )
            .duration("janitor_every", self.janitor_every, SECOND, 30 * DAY)
            .duration("gap_repair_every", self.gap_repair_every, SECOND, 30 * DAY)
            .duration(
                "task_shutdown_timeout",
                self.task_shutdown_timeout,
                Duration::from_millis(100),
                HOUR,
            )
            .finish()
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            instruments_at_boot: true,
            instruments_every: hour(),
            janitor_every: hour(),
            gap_repair_every: five_minutes(),
            task_shutdown_timeout: ten_seconds(),
        }
    }
}

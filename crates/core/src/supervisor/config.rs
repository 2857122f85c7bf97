//! The `[supervisor]` section: strategy, restart intensity and delays, shutdown.

use std::time::Duration;

use crate::delay::BackoffConfig;
use serde::{Deserialize, Serialize};

use super::Strategy;

/// How the root supervisor restarts and stops its children.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Which children restart when one fails.
    #[serde(default)]
    pub strategy: Strategy,
    /// More restarts than this within `period` and the supervisor gives up: it
    /// shuts the whole tree down and the process exits with code 70.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The sliding window `max_restarts` is counted in.
    #[serde(with = "humantime_serde", default = "default_period")]
    pub period: Duration,
    /// A child that ran this long before failing restarts with the shortest delay.
    #[serde(with = "humantime_serde", default = "default_stable_after")]
    pub stable_after: Duration,
    /// How long one child may take to drain before it is killed, unless its own
    /// specification says otherwise: alone (a restart on request, a sibling's
    /// restart) and within a shutdown, where `shutdown_deadline` bounds it too.
    #[serde(with = "humantime_serde", default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// The whole shutdown, from the signal to the last resource stopped: what is
    /// still running then is killed and named. `keel run` exits hard a short
    /// grace after it even if some task never yields.
    #[serde(with = "humantime_serde", default = "default_shutdown_deadline")]
    pub shutdown_deadline: Duration,
    /// Delay before each restart.
    #[serde(default)]
    pub backoff: BackoffConfig,
}

fn default_max_restarts() -> u32 {
    5
}
fn default_period() -> Duration {
    Duration::from_secs(60)
}
fn default_stable_after() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_shutdown_deadline() -> Duration {
    Duration::from_secs(20)
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            max_restarts: default_max_restarts(),
            period: default_period(),
            stable_after: default_stable_after(),
            shutdown_timeout: default_shutdown_timeout(),
            shutdown_deadline: default_shutdown_deadline(),
            backoff: BackoffConfig::default(),
        }
    }
}

impl SupervisorConfig {
    /// Every problem with these settings, as `(key, what is expected)` pairs with
    /// keys relative to the section.
    pub fn problems(&self) -> Vec<(String, String)> {
        use crate::bounds::{Check, DAY, HOUR, SECOND};
        let ms = Duration::from_millis;
        Check::new()
            .nested("backoff", self.backoff.problems())
            .count("max_restarts", self.max_restarts.into(), 0, 1000)
            .duration("period", self.period, SECOND, DAY)
            .duration("stable_after", self.stable_after, SECOND, DAY)
            .duration("shutdown_timeout", self.shutdown_timeout, ms(100), HOUR)
            .duration("shutdown_deadline", self.shutdown_deadline, SECOND, HOUR)
            .finish()
    }
}

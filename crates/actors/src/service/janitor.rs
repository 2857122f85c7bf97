//! The janitor (`keel task janitor`): deletes trades and candles older than
//! their retention in bounded batches (short transactions, no long locks), and
//! trims each trade stream below the oldest entry some consumer group still
//! needs. Running it twice is harmless.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::streams;
use super::task::{TaskError, TaskWork};
use crate::resource::pg::{PgClient, Retained};
use crate::resource::redis::RedisClient;
use crate::resource::RideOut;
use keel_core::child::Incarnation;

/// The `[janitor]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JanitorConfig {
    /// Trades older than this are deleted.
    #[serde(with = "humantime_serde", default = "default_trades")]
    pub trades_retention: Duration,
    /// Candles older than this are deleted.
    #[serde(with = "humantime_serde", default = "default_candles")]
    pub candles_retention: Duration,
    /// Groups that must have acknowledged an entry before it is trimmed.
    #[serde(default = "default_groups")]
    pub groups: Vec<String>,
}

fn default_trades() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_candles() -> Duration {
    Duration::from_secs(31_557_600) // a year of 365.25 days, printed as "1year"
}
fn default_groups() -> Vec<String> {
    vec!["distributor".into(), "analyzer".into()]
}

impl JanitorConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        use keel_core::bounds::{Check, CENTURY, HOUR};
        let mut check = Check::new();
        check
            .duration("trades_retention", self.trades_retention, HOUR, CENTURY)
            .duration("candles_retention", self.candles_retention, HOUR, CENTURY);
        for group in &self.groups {
            if group.is_empty() || group.len() > 128 || group.bytes().any(|b| !b.is_ascii_graphic())
            {
                check.push(
                    "groups",
                    "consumer group names of 1 to 128 printable characters",
                );
            }
        }
        check.finish()
    }
}

impl Default for JanitorConfig {
    fn default() -> Self {
        Self {
            trades_retention: default_trades(),
            candles_retention: default_candles(),
            groups: default_groups(),
        }
    }
}

/// The janitor's settings; the task is `RunOnce<Janitor>`.
#[derive(Clone, Debug)]
pub struct Janitor {
    /// Retention and groups.
    pub config: JanitorConfig,
    /// Instruments whose streams are trimmed.
    pub instruments: Vec<String>,
    /// PgActor, reached by name in the tree's registry.
    pub pg: PgClient,
    /// RedisActor, reached by name in the tree's registry.
    pub redis: RedisClient,
}

/// Compares stream ids (`ms-seq`) numerically.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl TaskWork for Janitor {
    async fn run(self, own: Incarnation) -> Result<String, TaskError> {
        let probe = &own.probe;
        let pg = self.pg.clone().riding_out(RideOut::new(&own));
        let redis = self.redis.clone().riding_out(RideOut::new(&own));
        let now = SystemTime::now();
        let trades = pg
            .delete_older_than(Retained::Trades, now - self.config.trades_retention)
            .await?;
        let candles = pg
            .delete_older_than(Retained::Candles, now - self.config.candles_retention)
            .await?;
        let mut trimmed = 0;
        for instrument in &self.instruments {
            let stream = streams::trade_stream(instrument);
            let progress = redis.group_progress(&stream).await?;
            // Every configured group must exist and have acknowledged an entry
            // before it goes; an entry pending anywhere stays.
            let mut floor: Option<String> = None;
            for group in &self.config.groups {
                let Some(g) = progress.iter().find(|p| &p.group == group) else {
                    floor = None;
                    tracing::info!(%stream, %group, "Group not on the stream yet; not trimming it.");
                    break;
                };
                let needed = g
                    .oldest_pending
                    .clone()
                    .unwrap_or_else(|| g.last_delivered.clone());
                floor = Some(match floor {
                    Some(f) if id_key(&f) <= id_key(&needed) => f,
                    _ => needed,
                });
            }
            if let Some(min_id) = floor {
                trimmed += redis.trim_min_id(&stream, &min_id).await?;
            }
        }
        let done = format!(
            "{trades} trades and {candles} candles deleted, {trimmed} stream entries trimmed"
        );
        probe.set_detail(
            "last_run",
            serde_json::json!({"trades": trades, "candles": candles, "stream_entries": trimmed}),
        );
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(id_key("9-5") < id_key("10-0"));
        assert!(id_key("10-2") < id_key("10-10"));
        assert_eq!(id_key("0-0"), (0, 0));
    }
}

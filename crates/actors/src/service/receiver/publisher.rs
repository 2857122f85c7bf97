//! Drains the outbox into Redis in pipelined batches (on size or after a short
//! linger) and records gaps in PostgreSQL. Only it waits on downstream work.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::connection::PUBLISH_RETRY;
use super::outbox::{Outbox, Pending};
use crate::resource::pg::PgClient;
use crate::resource::redis::{Fields, RedisClient};
use crate::service::streams;

pub(super) struct Publisher {
    pub(super) outbox: Arc<Outbox>,
    /// Waits out a Redis outage until the publisher is told to stop.
    pub(super) redis: RedisClient,
    /// Fails at once: gaps wait in the outbox while PostgreSQL is out, so trades
    /// keep flowing to Redis meanwhile.
    pub(super) pg: PgClient,
    pub(super) batch_size: usize,
    pub(super) linger: Duration,
    /// The tree is shutting down: what cannot be flushed becomes recorded gaps.
    pub(super) shutdown: CancellationToken,
}

impl Publisher {
    /// Runs until `stop`, then makes one flush pass (no waiting: Redis may be
    /// out) and returns. At a shutdown, what is left is recorded as gaps for
    /// repair; at a restart it stays in the outbox for the next incarnation.
    pub(super) async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if self.outbox.len() == 0 {
                tokio::select! {
                    () = self.outbox.ready.notified() => {}
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            if self.outbox.len() < self.batch_size {
                tokio::select! {
                    () = tokio::time::sleep(self.linger) => {}
                    () = stop.cancelled() => break,
                }
            }
            // The Redis client waits out an outage itself; a failure here is a
            // command error (or the stop), so pause before the next pass.
            if !self.publish_once().await {
                tokio::select! {
                    () = tokio::time::sleep(PUBLISH_RETRY) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
        while self.outbox.len() > 0 && self.publish_once().await {}
        let gaps = if self.shutdown.is_cancelled() {
            self.outbox.drain_as_gaps()
        } else {
            self.outbox.take_gaps()
        };
        if !gaps.is_empty() {
            if self.pg.is_ready() {
                if let Err(error) = self.pg.record_gaps(gaps.clone().into()).await {
                    tracing::warn!(%error, ?gaps, "Could not record trade gaps; gap repair's scan for holes will find them once later trades are stored.");
                    self.outbox.put_back_gaps(gaps);
                }
            } else if self.shutdown.is_cancelled() {
                tracing::warn!(?gaps, "PostgreSQL is out: trade gaps not recorded; gap repair's scan for holes will find them once later trades are stored.");
            } else {
                self.outbox.put_back_gaps(gaps);
            }
        }
    }

    /// One batch and any pending gaps; false when something failed.
    async fn publish_once(&self) -> bool {
        let mut ok = true;
        let batch = self.outbox.take(self.batch_size);
        if !batch.is_empty() {
            let mut groups: Vec<(String, Vec<Pending>)> = Vec::new();
            for entry in batch {
                match groups
                    .iter_mut()
                    .find(|(name, _)| *name == entry.instrument)
                {
                    Some((_, group)) => group.push(entry),
                    None => groups.push((entry.instrument.clone(), vec![entry])),
                }
            }
            let mut unsent: Vec<Pending> = Vec::new();
            for (instrument, group) in groups {
                if !unsent.is_empty() {
                    unsent.extend(group);
                    continue;
                }
                let fields: Arc<[Fields]> = group.iter().map(|p| p.fields.clone()).collect();
                if let Err(error) = self
                    .redis
                    .xadd_bulk(&streams::trade_stream(&instrument), fields)
                    .await
                {
                    tracing::debug!(%error, "Publishing to Redis failed; keeping the batch.");
                    ok = false;
                    unsent.extend(group);
                }
            }
            if !unsent.is_empty() {
                self.outbox.put_back(unsent);
            }
        }
        // Gaps only while PostgreSQL is there: a call to an absent server would
        // hold up the trades behind it.
        if self.pg.is_ready() {
            let gaps = self.outbox.take_gaps();
            if !gaps.is_empty() {
                if let Err(error) = self.pg.record_gaps(gaps.clone().into()).await {
                    tracing::warn!(%error, "Recording gaps failed; will retry.");
                    self.outbox.put_back_gaps(gaps);
                }
            }
        }
        ok
    }
}

//! Drains the outbox into Redis in pipelined batches (on size or after a short
//! linger) and records gaps in PostgreSQL. Only it waits on downstream work.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::connection::{Counters, PUBLISH_RETRY};
use super::outbox::{Outbox, Pending};
use crate::registry::Probe;
use crate::resource::pg::PgClient;
use crate::resource::redis::{Fields, RedisClient};
use crate::service::streams;

/// Attempts to flush what is left when the receiver stops.
const FINAL_ATTEMPTS: u32 = 3;

pub(super) struct Publisher {
    pub(super) outbox: Arc<Outbox>,
    pub(super) redis: RedisClient,
    pub(super) pg: PgClient,
    pub(super) batch_size: usize,
    pub(super) linger: Duration,
    pub(super) counters: Arc<Counters>,
    pub(super) probe: Probe,
}

impl Publisher {
    /// Runs until `stop`, then flushes what it holds (a few attempts) and returns.
    pub(super) async fn run(self, stop: CancellationToken) {
        loop {
            if self.outbox.len() == 0 {
                tokio::select! {
                    () = self.outbox.ready.notified() => {}
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            if self.outbox.len() < self.batch_size && !stop.is_cancelled() {
                tokio::select! {
                    () = tokio::time::sleep(self.linger) => {}
                    () = stop.cancelled() => {}
                }
            }
            if !self.publish_once().await && !stop.is_cancelled() {
                tokio::time::sleep(PUBLISH_RETRY).await;
            }
            self.show();
        }
        for _ in 0..FINAL_ATTEMPTS {
            while self.outbox.len() > 0 {
                if !self.publish_once().await {
                    break;
                }
            }
            if self.outbox.len() == 0 {
                break;
            }
            tokio::time::sleep(PUBLISH_RETRY).await;
        }
        let lost = self.outbox.drain_as_gaps();
        if !lost.is_empty() {
            // Whatever could not reach Redis is recorded for gap repair.
            if let Err(error) = self.pg.record_gaps(lost.clone().into()).await {
                tracing::error!(%error, gaps = ?lost, "Could not flush or record trades at shutdown; repair these ranges.");
            }
        }
        self.show();
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
        let gaps = self.outbox.take_gaps();
        if !gaps.is_empty() {
            if let Err(error) = self.pg.record_gaps(gaps.clone().into()).await {
                tracing::warn!(%error, "Recording gaps failed; will retry.");
                self.outbox.put_back_gaps(gaps);
                ok = false;
            }
        }
        ok
    }

    fn show(&self) {
        let c = &self.counters;
        self.probe.set_detail(
            "receiver",
            serde_json::json!({
                "frames": c.frames.load(Ordering::Relaxed),
                "trades": c.trades.load(Ordering::Relaxed),
                "malformed_frames": c.malformed.load(Ordering::Relaxed),
                "gaps_detected": c.gaps.load(Ordering::Relaxed),
                "book_resyncs": c.book_resyncs.load(Ordering::Relaxed),
                "last_data_ms": c.last_data_ms.load(Ordering::Relaxed),
                "buffered": self.outbox.len(),
                "dropped": self.outbox.dropped(),
            }),
        );
    }
}

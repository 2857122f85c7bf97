//! Drains the outbox into Redis in pipelined batches (on size or after a short
//! linger) and records gaps in PostgreSQL. Only it waits on downstream work.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::connection::{Counters, PUBLISH_RETRY};
use super::outbox::{Outbox, Pending};
use crate::resource::pg::PgClient;
use crate::resource::redis::op::cluster::lease_key;
use crate::resource::redis::{Fields, RedisClient};
use crate::service::leases::Leases;
use crate::service::streams;

pub(super) struct Publisher {
    pub(super) outbox: Arc<Outbox>,
    /// Waits out a Redis outage until the publisher is told to stop.
    pub(super) redis: RedisClient,
    /// Fails at once: gaps wait in the outbox while PostgreSQL is out, so trades
    /// keep flowing to Redis meanwhile.
    pub(super) pg: PgClient,
    pub(super) batch_size: usize,
    /// The most trades one stream entry holds.
    pub(super) trades_per_entry: usize,
    pub(super) linger: Duration,
    /// The tree is shutting down: what cannot be flushed becomes recorded gaps.
    pub(super) shutdown: CancellationToken,
    /// How far behind the consumer groups are; publishing waits while too far.
    pub(super) backlog: Backlog,
    /// Cluster mode: an instrument's trades are written only under its lease.
    pub(super) leases: Option<Arc<Leases>>,
}

/// How often the consumer groups' backlog is read while publishing.
const BACKLOG_EVERY: Duration = Duration::from_millis(250);

/// What one publishing pass did.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Everything taken went out (or there was nothing).
    Done,
    /// A write failed; what it held is back in the outbox.
    Failed,
    /// A consumer group is `max_backlog` behind: nothing was written.
    Held,
}

/// The consumer groups' backlog on the receiver's streams: entries delivered
/// and not acknowledged plus entries not delivered yet, for the slowest group,
/// in trades (each entry counted as full: the bound errs on the safe side).
/// Read at most every [`BACKLOG_EVERY`]; publishing is held from `limit` until
/// it is back under nine tenths of it, so it does not flap at the line.
#[derive(Debug)]
pub(super) struct Backlog {
    streams: Vec<String>,
    groups: Vec<String>,
    /// In trades.
    limit: u64,
    /// Trades an entry holds at most.
    per_entry: u64,
    /// When it was last read.
    checked: Mutex<Option<Instant>>,
    /// Whether publishing is held now (`backlog_full`), and how often it was.
    counters: Arc<Counters>,
}

impl Backlog {
    pub(super) fn new(
        streams: Vec<String>,
        groups: Vec<String>,
        limit: u64,
        per_entry: u64,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            streams,
            groups,
            limit,
            per_entry: per_entry.max(1),
            checked: Mutex::new(None),
            counters,
        }
    }

    /// Whether publishing must wait; reads the groups when the last reading is
    /// stale. A group or stream Redis does not report (not created yet), or a
    /// reading that fails, holds nothing back: the write that follows meets
    /// the same Redis.
    async fn full(&self, redis: &RedisClient) -> bool {
        let held = self.counters.backlog_full.load(Ordering::Relaxed);
        let checked = *self.checked.lock();
        if self.groups.is_empty() || checked.is_some_and(|at| at.elapsed() < BACKLOG_EVERY) {
            return held;
        }
        let mut worst = 0;
        for stream in &self.streams {
            let Ok(groups) = redis.group_progress(stream).await else {
                break;
            };
            for g in groups.iter().filter(|g| self.groups.contains(&g.group)) {
                let entries = g.pending + g.lag.unwrap_or(0);
                worst = worst.max(entries.saturating_mul(self.per_entry));
            }
        }
        let now_held = if held {
            worst >= self.limit / 10 * 9
        } else {
            worst >= self.limit
        };
        *self.checked.lock() = Some(Instant::now());
        if now_held != held {
            self.counters
                .backlog_full
                .store(now_held, Ordering::Relaxed);
            if now_held {
                self.counters.backlog_holds.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(backlog = worst, limit = self.limit,
                    "Consumers are behind: holding trades back (beyond the buffer the oldest are dropped and recorded as gaps).");
            } else {
                tracing::info!(backlog = worst, "Consumers caught up: publishing again.");
            }
        }
        now_held
    }
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
            // command error (or the stop), so pause before the next pass; so
            // does a pass held back for the consumers.
            let pause = match self.publish_once().await {
                Pass::Done => None,
                Pass::Failed => Some(PUBLISH_RETRY),
                Pass::Held => Some(BACKLOG_EVERY),
            };
            if let Some(pause) = pause {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
        while self.outbox.len() > 0 && self.publish_once().await == Pass::Done {}
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

    /// One batch, unless the consumers are too far behind, and any pending gaps.
    async fn publish_once(&self) -> Pass {
        let mut pass = Pass::Done;
        let full = self.outbox.len() > 0 && self.backlog.full(&self.redis).await;
        let batch = if full {
            pass = Pass::Held;
            Vec::new()
        } else {
            self.outbox.take(self.batch_size)
        };
        if !batch.is_empty() {
            let mut groups: Vec<(Arc<str>, Vec<Pending>)> = Vec::new();
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
            let per_entry = self.trades_per_entry.max(1);
            for (instrument, group) in groups {
                if !unsent.is_empty() {
                    unsent.extend(group);
                    continue;
                }
                // Up to `per_entry` trades per entry, in order; the trades stay
                // here until the write succeeded, to go back if it did not.
                let entries: Arc<[Fields]> = group
                    .chunks(per_entry)
                    .map(|chunk| {
                        let texts: Vec<&[u8]> = chunk.iter().map(|p| &*p.text).collect();
                        streams::encode_texts(&texts)
                    })
                    .collect();
                let stream = streams::trade_stream(&instrument);
                let written = match &self.leases {
                    None => self
                        .redis
                        .xadd_packed(&stream, entries, per_entry as u64)
                        .await
                        .map(drop),
                    // Another instance receives it: its trades are not ours to write.
                    Some(leases) => match leases.holder(&instrument) {
                        None => {
                            leases.unleased(group.len() as u64);
                            continue;
                        }
                        Some(holder) => self
                            .redis
                            .xadd_fenced(
                                &stream,
                                entries,
                                per_entry as u64,
                                &lease_key("receiver", &instrument),
                                &holder,
                            )
                            .await
                            .map(|appended| {
                                if appended.is_none() {
                                    leases.fenced_out(&instrument, group.len() as u64);
                                }
                            }),
                    },
                };
                if let Err(error) = written {
                    tracing::debug!(%error, "Publishing to Redis failed; keeping the batch.");
                    pass = Pass::Failed;
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
        pass
    }
}

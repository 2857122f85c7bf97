//! Cluster mode: which instruments this instance receives, or folds into
//! candles. For each service ([`Kind`]) one instance of the fleet holds each
//! instrument's lease (`cluster:lease:{kind}:{instrument}`, `{id}:{token}`),
//! takes it over within the lease TTL when its holder dies, and writes only
//! while the lease is its own. The receiver's appends check the lease in the
//! same script ([`XaddFenced`]); the analyzer's folds check the token against
//! the one the last taker raised in PostgreSQL (`fold_fences`), in the fold's
//! own transaction. So an instance that was paused or cut off past its lease
//! writes nothing when it resumes.
//!
//! Instruments are spread by rendezvous hashing over the live members that
//! receive them: each instrument goes to the member with the highest
//! `fnv1a(id, instrument)`, so a join or a leave moves only the instruments it
//! wins or held. A holder that is no longer the instrument's choice stops
//! subscribing to it, keeps the lease for one more round while what it
//! buffered is published, then releases it; the chosen member takes it at its
//! next round. A lease free for two rounds is taken by whoever sees it, so
//! members that disagree about the membership never leave one unreceived.
//! For the receiver, the trades between the last one the old holder published
//! and the first the new one receives are a gap: the new holder starts from the
//! stream's last entry, records the gap, and gap repair fills it. The analyzer
//! that takes an instrument over raises its fence first, then claims every
//! entry the group holds pending for other consumers on that stream and folds
//! those before reading new ones, so the instrument's trades are folded in
//! stream order.
//!
//! [`XaddFenced`]: crate::resource::redis::op::XaddFenced

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::registry::Probe;
use keel_core::stats::{Family, Samples, Stats};
use keel_core::tasks::OwnedTask;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::Weak;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::resource::pg::PgClient;
use crate::resource::redis::op::cluster::lease_key;
use crate::resource::redis::RedisClient;
use crate::service::receiver::Continuity;
use crate::service::{now_ms, streams};

/// Which service's leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One subscription per instrument.
    Receiver,
    /// One folder of candles per instrument.
    Analyzer,
}

impl Kind {
    /// Its name in the lease keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Analyzer => "analyzer",
        }
    }

    /// The list in a member's description naming the instruments it takes
    /// these leases for.
    pub fn members_key(self) -> &'static str {
        match self {
            Kind::Receiver => "receives",
            Kind::Analyzer => "analyzes",
        }
    }
}

/// What taking an instrument over needs before it counts as held.
#[derive(Clone, Debug)]
pub enum Takeover {
    /// The receiver: start its sequence from the stream's last entry.
    Receiver(Continuity),
    /// The analyzer: raise the instrument's fold fence to the new token.
    Analyzer(PgClient),
}

/// What an instance holds of one instrument.
#[derive(Clone, Debug)]
struct Held {
    /// `{id}:{token}`, what the lease key must hold for a write to go in.
    holder: String,
    /// When it was last renewed.
    renewed: Instant,
    /// Given up at the next round: it is no longer this instance's choice.
    releasing: bool,
}

/// Counters of the lease rounds, for the registry and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct LeaseCounters {
    pub(crate) acquired: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) lost: AtomicU64,
    /// Trades not written: the lease was not this instance's (any more).
    pub(crate) fenced: AtomicU64,
}

/// A service's leases, kept across its incarnations (a restart keeps the
/// leases it holds).
#[derive(Debug)]
pub struct Leases {
    kind: Kind,
    instance: String,
    ttl: Duration,
    every: Duration,
    instruments: Vec<String>,
    held: Mutex<HashMap<String, Held>>,
    /// Rounds each instrument's lease was seen free while another member was
    /// its choice.
    free_rounds: Mutex<HashMap<String, u32>>,
    /// The instruments to subscribe to.
    owned: watch::Sender<BTreeSet<String>>,
    /// The last round saw an instrument this instance is the choice for held
    /// by another.
    awaiting: std::sync::atomic::AtomicBool,
    pub(crate) counters: LeaseCounters,
}

/// Rounds a lease may stay free, its choice not taking it, before any member takes it.
const FREE_ROUNDS: u32 = 2;

/// Time between rounds while a lease changes hands: what the old holder
/// buffered is published within it, and the new one takes it after about it.
const HANDOVER_ROUND: Duration = Duration::from_millis(500);

/// FNV-1a over the member and the instrument, then MurmurHash3's 64-bit
/// finalizer (FNV alone leaves ids that differ in one character too close):
/// the same on every host and every build, so every member computes the same
/// choice.
fn score(member: &str, instrument: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.bytes().chain([0xff]).chain(instrument.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The member that should receive `instrument`: the highest score (ties by id).
fn choice<'a>(members: &'a [String], instrument: &str) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| (score(m, instrument), m.as_str()))
        .map(String::as_str)
}

impl Leases {
    /// `kind`'s leases of `instance` for `instruments`.
    pub fn new(
        kind: Kind,
        instance: String,
        ttl: Duration,
        every: Duration,
        instruments: Vec<String>,
    ) -> Self {
        Self {
            kind,
            instance,
            ttl,
            every,
            instruments,
            held: Mutex::default(),
            free_rounds: Mutex::default(),
            owned: watch::channel(BTreeSet::new()).0,
            awaiting: std::sync::atomic::AtomicBool::new(false),
            counters: LeaseCounters::default(),
        }
    }

    /// The instruments to subscribe to, as they change.
    pub(crate) fn owned(&self) -> watch::Receiver<BTreeSet<String>> {
        self.owned.subscribe()
    }

    /// What the lease key must hold for this instance to write `instrument`'s
    /// stream; `None`: it does not hold the lease.
    pub(crate) fn holder(&self, instrument: &str) -> Option<String> {
        self.held.lock().get(instrument).map(|h| h.holder.clone())
    }

    /// The instruments held now (not being handed over).
    pub(crate) fn owned_now(&self) -> BTreeSet<String> {
        self.owned.borrow().clone()
    }

    /// The token `instrument` is held with, while its lease is not older than
    /// its TTL by this instance's clock.
    pub(crate) fn token(&self, instrument: &str) -> Option<u64> {
        let held = self.held.lock();
        let h = held.get(instrument)?;
        if h.releasing || h.renewed.elapsed() >= self.ttl {
            return None;
        }
        h.holder.rsplit_once(':')?.1.parse().ok()
    }

    /// A write found the lease gone: stop receiving `instrument`.
    pub(crate) fn fenced_out(&self, instrument: &str, trades: u64) {
        self.counters.fenced.fetch_add(trades, Ordering::Relaxed);
        if self.held.lock().remove(instrument).is_some() {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%instrument, kind = self.kind.as_str(), "The lease went to another instance; its writes were refused and it is no longer taken here.");
        }
        self.publish();
    }

    /// Trades dropped because this instance holds no lease for them.
    pub(crate) fn unleased(&self, trades: u64) {
        self.counters.fenced.fetch_add(trades, Ordering::Relaxed);
    }

    fn publish(&self) {
        let owned: BTreeSet<String> = self
            .held
            .lock()
            .iter()
            .filter(|(_, h)| !h.releasing)
            .map(|(i, _)| i.clone())
            .collect();
        self.owned.send_if_modified(|now| {
            let changed = *now != owned;
            *now = owned;
            changed
        });
    }

    /// The registry's view: held instruments with their tokens, and counters.
    pub(crate) fn show(&self) -> Value {
        let held: Vec<Value> = {
            let held = self.held.lock();
            let mut rows: Vec<Value> = held
                .iter()
                .map(|(instrument, h)| {
                    json!({"instrument": instrument, "holder": h.holder, "releasing": h.releasing})
                })
                .collect();
            rows.sort_by(|a, b| a["instrument"].as_str().cmp(&b["instrument"].as_str()));
            rows
        };
        let c = &self.counters;
        json!({
            "kind": self.kind.as_str(),
            "instance": self.instance,
            "held": held,
            "acquired": c.acquired.load(Ordering::Relaxed),
            "released": c.released.load(Ordering::Relaxed),
            "lost": c.lost.load(Ordering::Relaxed),
            "fenced_trades": c.fenced.load(Ordering::Relaxed),
        })
    }

    /// Lease rounds every `renew_every` until `stop`, then gives every lease up
    /// (once the publisher has flushed: see the receiver's `post_stop`).
    pub(crate) async fn run(
        self: Arc<Self>,
        redis: RedisClient,
        takeover: Takeover,
        stop: CancellationToken,
    ) {
        loop {
            let bound = self.every.max(Duration::from_secs(1));
            if tokio::time::timeout(bound, self.round(&redis, &takeover))
                .await
                .is_err()
            {
                tracing::debug!("A lease round took longer than {bound:?}; the next one follows.");
            }
            self.expire_unrenewed();
            // A handover under way (one of ours being given up, or one that is
            // ours to take still held by another) goes on at once, not a round later.
            let next = if self.handing_over() {
                self.every.min(HANDOVER_ROUND)
            } else {
                self.every
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(next) => {}
            }
        }
    }

    /// Whether a lease is changing hands: one being given up here, or one
    /// that is this instance's choice and not (yet) its own.
    fn handing_over(&self) -> bool {
        self.held.lock().values().any(|h| h.releasing) || self.awaiting.load(Ordering::Relaxed)
    }

    /// Leases not renewed within their TTL (Redis unreachable) may be someone
    /// else's now: stop receiving them (writes were fenced anyway).
    fn expire_unrenewed(&self) {
        let mut expired = Vec::new();
        self.held.lock().retain(|instrument, h| {
            let live = h.renewed.elapsed() < self.ttl;
            if !live {
                expired.push(instrument.clone());
            }
            live
        });
        if expired.is_empty() {
            return;
        }
        for instrument in expired {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%instrument, kind = self.kind.as_str(), ttl = ?self.ttl, "Lease not renewed within its TTL; no longer taken here.");
        }
        self.publish();
    }

    async fn round(&self, redis: &RedisClient, takeover: &Takeover) {
        let live_since = now_ms() - i64::try_from(self.ttl.as_millis()).unwrap_or(0);
        let seen = match redis
            .read_leases(self.kind.as_str(), self.instruments.clone(), live_since)
            .await
        {
            Ok(seen) => seen,
            Err(error) => {
                tracing::debug!(%error, kind = self.kind.as_str(), "Cannot read the leases; renewing what is held.");
                self.renew_all(redis).await;
                return;
            }
        };
        // What each member takes, read once a round; this one always takes
        // its own instruments.
        let list = self.kind.members_key();
        let takes: Vec<(&str, Vec<String>)> = seen
            .members
            .iter()
            .map(|(id, info)| {
                let instruments = info
                    .as_deref()
                    .and_then(|i| serde_json::from_str::<Value>(i).ok())
                    .and_then(|v| serde_json::from_value(v[list].clone()).ok())
                    .unwrap_or_default();
                (id.as_str(), instruments)
            })
            .collect();
        let mut awaiting = false;
        for (instrument, lease) in self.instruments.iter().zip(&seen.held) {
            let mut candidates: Vec<String> = takes
                .iter()
                .filter(|(_, instruments)| instruments.contains(instrument))
                .map(|(id, _)| (*id).to_owned())
                .collect();
            if !candidates.contains(&self.instance) {
                candidates.push(self.instance.clone());
            }
            let chosen = choice(&candidates, instrument) == Some(self.instance.as_str());
            let mine = lease.as_deref().is_some_and(|l| {
                l.rsplit_once(':')
                    .is_some_and(|(who, _)| who == self.instance)
            });
            awaiting |= chosen && !mine;
            self.step(redis, takeover, instrument, lease.as_deref(), chosen)
                .await;
        }
        self.awaiting.store(awaiting, Ordering::Relaxed);
        self.publish();
    }

    /// One instrument's round.
    async fn step(
        &self,
        redis: &RedisClient,
        takeover: &Takeover,
        instrument: &str,
        lease: Option<&str>,
        chosen: bool,
    ) {
        let kind = self.kind.as_str();
        let key = lease_key(kind, instrument);
        let mine = self.held.lock().get(instrument).cloned();
        if let Some(h) = mine {
            if h.releasing {
                if let Err(error) = redis.lease_release(&key, &h.holder).await {
                    tracing::debug!(%error, %instrument, kind, "Could not release the lease; it expires.");
                }
                self.held.lock().remove(instrument);
                self.counters.released.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%instrument, kind, "Lease handed over to the instance that is now its choice.");
                return;
            }
            match redis.lease_renew(&key, &h.holder, self.ttl).await {
                Ok(true) => {
                    if let Some(h) = self.held.lock().get_mut(instrument) {
                        h.renewed = Instant::now();
                        // Another member is the choice now: stop subscribing,
                        // release at the next round.
                        h.releasing = !chosen;
                    }
                }
                Ok(false) => {
                    self.held.lock().remove(instrument);
                    self.counters.lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%instrument, kind, "Lease lost to another instance; no longer taken here.");
                }
                Err(error) => {
                    tracing::debug!(%error, %instrument, kind, "Lease renewal failed; tried again next round.");
                }
            }
            return;
        }
        let free = lease.is_none();
        let rounds = {
            let mut free_rounds = self.free_rounds.lock();
            let n = free_rounds.entry(instrument.to_owned()).or_default();
            *n = if free { *n + 1 } else { 0 };
            *n
        };
        if !free || !(chosen || rounds > FREE_ROUNDS) {
            return;
        }
        let token = match redis
            .take_lease(kind, instrument, &self.instance, self.ttl)
            .await
        {
            Ok(Some(token)) => token,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, %instrument, kind, "Could not take the lease; tried again next round.");
                return;
            }
        };
        let holder = format!("{}:{token}", self.instance);
        match takeover {
            // Start from where the stream ends: the trades between it and the
            // first one received here are a gap, recorded for repair.
            Takeover::Receiver(continuity) => {
                let stream = streams::trade_stream(instrument);
                let last = match redis.last_entry(&stream).await {
                    Ok(entry) => entry.as_ref().and_then(streams::last_trade_seq),
                    Err(_) => None,
                };
                continuity.restart_from(instrument, last);
            }
            // Folds under an older token are refused from now on; one in
            // flight finishes first (the fence waits for the fold lock).
            Takeover::Analyzer(pg) => {
                let token = i64::try_from(token).unwrap_or(i64::MAX);
                if let Err(error) = pg.raise_fold_fence(instrument, token).await {
                    tracing::warn!(%error, %instrument, "Could not raise the fold fence; giving the lease back to try again.");
                    let _ = redis.lease_release(&key, &holder).await;
                    return;
                }
            }
        }
        self.free_rounds.lock().remove(instrument);
        self.held.lock().insert(
            instrument.to_owned(),
            Held {
                holder,
                renewed: Instant::now(),
                releasing: false,
            },
        );
        self.counters.acquired.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%instrument, kind, token, "Lease taken; this instance takes the instrument now.");
    }

    /// Renews every held lease (the membership could not be read).
    async fn renew_all(&self, redis: &RedisClient) {
        let held: Vec<(String, String)> = self
            .held
            .lock()
            .iter()
            .map(|(i, h)| (i.clone(), h.holder.clone()))
            .collect();
        for (instrument, holder) in held {
            let key = lease_key(self.kind.as_str(), &instrument);
            if let Ok(true) = redis.lease_renew(&key, &holder, self.ttl).await {
                if let Some(h) = self.held.lock().get_mut(&instrument) {
                    h.renewed = Instant::now();
                }
            }
        }
    }

    /// Gives every held lease up, so another member takes them at once.
    pub(crate) async fn release_all(&self, redis: &RedisClient) {
        let held: Vec<(String, String)> = self
            .held
            .lock()
            .drain()
            .map(|(i, h)| (i, h.holder))
            .collect();
        for (instrument, holder) in held {
            let key = lease_key(self.kind.as_str(), &instrument);
            let release = redis.lease_release(&key, &holder);
            match tokio::time::timeout(Duration::from_secs(1), release).await {
                Ok(Ok(_)) => {
                    self.counters.released.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    tracing::debug!(%instrument, kind = self.kind.as_str(), "Could not release the lease; it expires.");
                }
            }
        }
        self.publish();
    }
}

/// A service's lease rounds, owned by its actor's incarnation: started with it
/// and stopped with it. The leases outlive a restart (the next incarnation
/// renews them); at a shutdown they are given up, so another instance takes
/// them at once.
#[derive(Debug)]
pub(crate) struct LeaseRounds {
    leases: Arc<Leases>,
    stop: CancellationToken,
    task: OwnedTask,
}

impl LeaseRounds {
    /// Starts `leases`' rounds as a task of `actor` (which `failed` tells if
    /// they end by themselves), and shows them as its `leases` detail.
    pub(crate) fn start<M: ractor::Message>(
        leases: &Arc<Leases>,
        redis: RedisClient,
        takeover: Takeover,
        actor: &ractor::ActorRef<M>,
        probe: &Probe,
        failed: impl FnOnce(String) -> M + Send + 'static,
    ) -> Self {
        let stop = CancellationToken::new();
        let rounds = Arc::clone(leases).run(redis, takeover, stop.clone());
        let task = OwnedTask::spawn(actor, rounds, |end| {
            Some(failed(end.unexpected("lease rounds")))
        });
        probe.set_stats("leases", LeaseStats(Arc::downgrade(leases)));
        Self {
            leases: Arc::clone(leases),
            stop,
            task,
        }
    }

    /// Stops the rounds; at a shutdown (`release`), gives every lease up.
    pub(crate) async fn stop(self, redis: &RedisClient, release: bool) {
        self.stop.cancel();
        self.task.join().await;
        if release {
            self.leases.release_all(redis).await;
        }
    }
}

const LEASES_HELD: Family = Family::gauge(
    "keel_leases_held",
    "Cluster mode: instruments whose lease (receiver or analyzer, by actor) this instance holds.",
);
const LEASE_CHANGES: Family = Family::counter(
    "keel_lease_changes_total",
    "Cluster mode: leases taken, handed over, and lost (expired or taken by another instance).",
);
const FENCED: Family = Family::counter(
    "keel_fenced_trades_total",
    "Cluster mode: trades not written (receiver) or not folded (analyzer) because the instrument's lease was not this instance's.",
);

/// A service's leases in cluster mode (its `leases` detail).
#[derive(Debug)]
struct LeaseStats(Weak<Leases>);

impl Stats for LeaseStats {
    fn show(&self) -> Option<serde_json::Value> {
        Some(self.0.upgrade()?.show())
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        let Some(leases) = self.0.upgrade() else {
            return;
        };
        let held = leases.held.lock().len();
        out.add(&LEASES_HELD, &[("actor", actor)], held as f64);
        let c = &leases.counters;
        for (change, n) in [
            ("acquired", &c.acquired),
            ("released", &c.released),
            ("lost", &c.lost),
        ] {
            out.add(
                &LEASE_CHANGES,
                &[("actor", actor), ("change", change)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        out.add(
            &FENCED,
            &[("actor", actor)],
            c.fenced.load(Ordering::Relaxed) as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_computes_the_same_choice_and_a_join_moves_only_what_it_wins() {
        let instruments: Vec<String> = (0..200).map(|i| format!("I-{i}")).collect();
        let two = ["a".to_owned(), "b".to_owned()];
        let three = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let mut moved = 0;
        let mut per = HashMap::new();
        for i in &instruments {
            let before = choice(&two, i).unwrap();
            let after = choice(&three, i).unwrap();
            if before != after {
                assert_eq!(after, "c", "{i} moved between the old members");
                moved += 1;
            }
            *per.entry(after).or_insert(0) += 1;
        }
        // About a third moves to the new member, and the spread is even.
        assert!((40..=95).contains(&moved), "{moved} of 200 moved");
        for m in ["a", "b", "c"] {
            assert!((40..=95).contains(&per[m]), "{per:?}");
        }
        // Fixed values: the hash is the same on every build.
        assert_eq!(score("a", "BTC-PERPETUAL"), score("a", "BTC-PERPETUAL"));
        assert_ne!(score("ab", "c"), score("a", "bc"));
        let mut per: HashMap<&str, usize> = HashMap::new();
        let close = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        for i in [
            "BTC-PERPETUAL",
            "ETH-PERPETUAL",
            "SOL-PERPETUAL",
            "XRP-PERPETUAL",
            "BTC-27MAR26",
            "ETH-27MAR26",
            "BTC-26JUN26",
            "ETH-26JUN26",
            "BTC-25SEP26",
        ] {
            *per.entry(choice(&close, i).unwrap()).or_default() += 1;
        }
        assert!(
            per.values().all(|&n| n >= 1),
            "ids one letter apart spread too: {per:?}"
        );
    }
}

//! The receiver: Deribit WebSocket → Redis Streams.
//!
//! A connection task reads frames and never waits on downstream work: trades go
//! into a bounded outbox that a separate publisher drains into Redis in
//! pipelined batches. Liveness needs no monitor: no data for `stall_timeout`,
//! missed heartbeats, a closed socket or a refused subscription end the
//! connection, the receiver fails, and the supervisor starts a new one with
//! backoff, which subscribes again. There is no reconnect loop here.

mod config;
mod connection;
mod continuity;
mod outbox;
mod publisher;
mod stats;
mod validate;

pub use config::ReceiverConfig;
pub use continuity::Continuity;
pub use validate::{check_values, Rejected, Rejection};

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio_util::sync::CancellationToken;

use crate::resource::pg::PgClient;
use crate::resource::redis::RedisClient;
use crate::resource::RideOut;
use crate::service::leases::{LeaseRounds, Leases, Takeover};
use crate::service::streams;
use keel_core::child::{spawn_with_probe, Incarnation, Outage, StartContext};
use keel_core::recorded::Recordable;
use keel_core::tasks::{OwnedTask, TaskEnd};

pub use connection::Ended;
use connection::{Connection, Counters, Logs};
use outbox::Outbox;
use publisher::{Backlog, Publisher};
use stats::{ReceiverStats, RejectedStats};
use validate::Gate;

/// What a receiver is started with.
#[derive(Clone, Debug)]
pub struct ReceiverArgs {
    /// Its `[receiver]` section.
    pub config: ReceiverConfig,
    /// RedisActor, reached by name in the tree's registry.
    pub redis: RedisClient,
    /// PgActor, reached by name in the tree's registry.
    pub pg: PgClient,
    /// Sequence state that outlives an incarnation.
    continuity: Continuity,
    /// Trades not in Redis yet; outlives an incarnation, so a reconnect to the
    /// exchange during a Redis outage keeps what was buffered.
    outbox: Arc<Outbox>,
    /// The edge checks, their counters and sample; outlive an incarnation.
    gate: Arc<Gate>,
    /// Repeating warnings, bounded across incarnations.
    logs: Arc<Logs>,
    /// The consumer groups whose backlog bounds publishing (`max_backlog`).
    backlog_groups: Vec<String>,
    /// Cluster mode: the instruments' leases, kept across incarnations.
    leases: Option<Arc<Leases>>,
}

impl ReceiverArgs {
    /// Arguments for every incarnation of one receiver.
    pub fn new(config: ReceiverConfig, redis: RedisClient, pg: PgClient) -> Self {
        let outbox = Arc::new(Outbox::new(config.buffer_limit, config.buffer_limit_bytes));
        let gate = Arc::new(Gate::new(
            &config.instruments,
            config.max_trade_age,
            config.max_seq_jump,
        ));
        Self {
            gate,
            logs: Arc::default(),
            config,
            redis,
            pg,
            continuity: Continuity::default(),
            outbox,
            backlog_groups: Vec::new(),
            leases: None,
        }
    }

    /// Cluster mode: receives only the instruments whose lease this instance
    /// holds, and writes their streams only under it.
    pub fn with_leases(mut self, leases: Leases) -> Self {
        self.leases = Some(Arc::new(leases));
        self
    }

    /// Bounds publishing by these consumer groups' backlog: when one has
    /// `max_backlog` entries of a stream not acknowledged, the receiver adds no
    /// more until it catches up. Without groups, nothing bounds it.
    pub fn with_backlog_groups(mut self, groups: Vec<String>) -> Self {
        self.backlog_groups = groups;
        self
    }
}

/// Messages the receiver handles.
#[derive(Debug)]
pub enum ReceiverMsg {
    /// The connection task ended, with the reason when it failed.
    ConnectionEnded(Result<(), Ended>),
    /// A task of its own panicked or ended when it should not have.
    TaskFailed(String),
}

impl Recordable for ReceiverMsg {
    fn kind(&self) -> &'static str {
        match self {
            ReceiverMsg::ConnectionEnded(_) => "ConnectionEnded",
            ReceiverMsg::TaskFailed(_) => "TaskFailed",
        }
    }

    fn summary(&self) -> String {
        match self {
            ReceiverMsg::ConnectionEnded(Ok(())) => "connection closed on request".into(),
            ReceiverMsg::ConnectionEnded(Err(ended)) => ended.to_string(),
            ReceiverMsg::TaskFailed(reason) => reason.clone(),
        }
    }
}

/// Holds the exchange connection and the publisher into Redis; restarted by its supervisor.
#[derive(Debug, Default)]
pub struct Receiver;

/// Its running state. Dropping it (however the actor ended) aborts both tasks.
#[derive(Debug)]
pub struct ReceiverState {
    /// Kept for the registry's live `receiver` detail.
    _counters: Arc<Counters>,
    connection_stop: CancellationToken,
    connection: Option<OwnedTask>,
    publisher_stop: CancellationToken,
    publisher: Option<OwnedTask>,
    /// Cluster mode: the lease rounds.
    leases: Option<LeaseRounds>,
    redis: RedisClient,
    /// The tree is shutting down (leases are released then, kept across restarts).
    shutdown: CancellationToken,
}

impl Receiver {
    /// Spawns one receiver incarnation; use as a child factory.
    pub async fn spawn(args: ReceiverArgs, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(Receiver, args, ctx).await
    }
}

impl Actor for Receiver {
    type Msg = ReceiverMsg;
    type State = ReceiverState;
    type Arguments = (ReceiverArgs, Incarnation);

    async fn pre_start(
        &self,
        myself: ActorRef<ReceiverMsg>,
        (args, own): (ReceiverArgs, Incarnation),
    ) -> Result<ReceiverState, ActorProcessingErr> {
        let probe = own.probe.clone();
        let outbox = Arc::clone(&args.outbox);
        let counters = Arc::new(Counters::default());
        let redis = args.redis.clone();
        let own_redis = args.redis.clone();
        // The publisher waits out a Redis outage until it is told to stop, which
        // happens only after the connection ended (see `post_stop`).
        let publisher_stop = CancellationToken::new();
        let publisher = Publisher {
            outbox: Arc::clone(&outbox),
            redis: redis
                .clone()
                .riding_out(RideOut::until(probe.clone(), publisher_stop.clone())),
            pg: args.pg.clone(),
            batch_size: args.config.batch_size,
            trades_per_entry: args.config.trades_per_entry,
            linger: args.config.linger,
            shutdown: own.shutdown.clone(),
            backlog: Backlog::new(
                args.config
                    .instruments
                    .iter()
                    .map(|i| streams::trade_stream(i))
                    .collect(),
                args.backlog_groups.clone(),
                args.config.max_backlog,
                args.config.trades_per_entry as u64,
                Arc::clone(&counters),
            ),
            leases: args.leases.clone(),
        };
        probe.set_stats("rejected", RejectedStats(Arc::downgrade(&args.gate)));
        let gate = Arc::downgrade(&args.gate);
        probe.set_live_detail("rejected_sample", move || Some(gate.upgrade()?.sample()));
        probe.set_stats("receiver", ReceiverStats::new(&counters, &outbox));
        let publisher = OwnedTask::spawn(&myself, publisher.run(publisher_stop.clone()), |end| {
            Some(ReceiverMsg::TaskFailed(end.unexpected("publisher")))
        });

        let owned = args.leases.as_ref().map(|l| l.owned());
        let leases = args.leases.as_ref().map(|leases| {
            let takeover = Takeover::Receiver(args.continuity.clone());
            LeaseRounds::start(
                leases,
                redis.clone(),
                takeover,
                &myself,
                &probe,
                ReceiverMsg::TaskFailed,
            )
        });
        let connection_counters = Arc::clone(&counters);
        let connection_stop = own.stop.child_token();
        let stop = connection_stop.clone();
        probe.set_detail("subscriptions", args.config.instruments.len());
        let connection = async move {
            // A cold start learns where each stream ended, so a hole across a
            // process restart is seen too. Best effort: Redis may be down.
            for instrument in &args.config.instruments {
                let stream = streams::trade_stream(instrument);
                let last =
                    tokio::time::timeout(Duration::from_secs(2), redis.last_entry(&stream)).await;
                if let Ok(Ok(Some(entry))) = last {
                    if let Some(seq) = streams::last_trade_seq(&entry) {
                        args.continuity.seed(instrument, seq);
                    }
                }
            }
            let connection = Connection {
                config: args.config,
                outbox,
                continuity: args.continuity,
                gate: args.gate,
                counters: connection_counters,
                logs: args.logs,
                probe: probe.clone(),
                owned,
            };
            let ended = connection.run(stop).await;
            probe.set_detail(
                "connection",
                if ended.is_ok() { "closed" } else { "failed" },
            );
            ended
        };
        let connection = OwnedTask::spawn(&myself, connection, |end| match end {
            TaskEnd::Returned(ended) => Some(ReceiverMsg::ConnectionEnded(ended)),
            TaskEnd::Panicked(_) => Some(ReceiverMsg::TaskFailed(end.unexpected("connection"))),
        });
        Ok(ReceiverState {
            _counters: counters,
            connection_stop,
            connection: Some(connection),
            publisher_stop,
            publisher: Some(publisher),
            leases,
            redis: own_redis,
            shutdown: own.shutdown.clone(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReceiverMsg>,
        message: ReceiverMsg,
        state: &mut ReceiverState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // Restarting is how the receiver reconnects; an exchange that went
            // away is not the receiver's own failure.
            ReceiverMsg::ConnectionEnded(Err(Ended::Lost(reason))) => {
                Err(Outage::new(reason).into())
            }
            ReceiverMsg::ConnectionEnded(Err(Ended::Refused(reason))) => Err(reason.into()),
            ReceiverMsg::ConnectionEnded(Ok(())) => Ok(()),
            // The publisher ends only when told to; anything else is a bug.
            ReceiverMsg::TaskFailed(_) if state.publisher_stop.is_cancelled() => Ok(()),
            ReceiverMsg::TaskFailed(reason) => Err(reason.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ReceiverMsg>,
        state: &mut ReceiverState,
    ) -> Result<(), ActorProcessingErr> {
        // Stop intake first, then let the publisher flush what it holds.
        state.connection_stop.cancel();
        if let Some(connection) = state.connection.take() {
            connection.join().await;
        }
        state.publisher_stop.cancel();
        if let Some(publisher) = state.publisher.take() {
            publisher.join().await;
        }
        // Leases outlive a restart; at a shutdown they go to the other
        // instances at once, after what was received here is published.
        if let Some(rounds) = state.leases.take() {
            rounds
                .stop(&state.redis, state.shutdown.is_cancelled())
                .await;
        }
        Ok(())
    }
}

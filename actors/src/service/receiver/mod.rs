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

pub use config::ReceiverConfig;
pub use continuity::Continuity;

use crate::mailbox::Tell;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::child::{spawn_with_probe, StartContext};
use crate::recorded::Recordable;
use crate::registry::{Probe, Registry};
use crate::resource::pg::PgClient;
use crate::resource::redis::RedisClient;
use crate::service::streams;

use connection::{Connection, Counters};
use outbox::Outbox;
use publisher::Publisher;

/// What a receiver is started with.
#[derive(Clone, Debug)]
pub struct ReceiverArgs {
    /// Its settings.
    pub config: ReceiverConfig,
    /// The tree's registry (to reach the resource actors).
    pub registry: Registry,
    /// RedisActor's name.
    pub redis: String,
    /// PgActor's name.
    pub pg: String,
    /// Sequence state that outlives an incarnation.
    pub continuity: Continuity,
}

/// Messages the receiver handles.
#[derive(Debug)]
pub enum ReceiverMsg {
    /// The connection task ended, with the reason when it failed.
    ConnectionEnded(Result<(), String>),
}

impl Recordable for ReceiverMsg {
    fn kind(&self) -> &'static str {
        "ConnectionEnded"
    }

    fn summary(&self) -> String {
        match self {
            ReceiverMsg::ConnectionEnded(Ok(())) => "connection closed on request".into(),
            ReceiverMsg::ConnectionEnded(Err(reason)) => reason.clone(),
        }
    }
}

/// The receiver actor.
#[derive(Debug, Default)]
pub struct Receiver;

/// Its running state.
#[derive(Debug)]
pub struct ReceiverState {
    connection_stop: CancellationToken,
    connection: Option<JoinHandle<()>>,
    publisher_stop: CancellationToken,
    publisher: Option<JoinHandle<()>>,
}

/// Ends the tasks even when the actor is killed and `post_stop` never runs.
impl Drop for ReceiverState {
    fn drop(&mut self) {
        self.connection_stop.cancel();
        self.publisher_stop.cancel();
    }
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
    type Arguments = (ReceiverArgs, Probe);

    async fn pre_start(
        &self,
        myself: ActorRef<ReceiverMsg>,
        (args, probe): (ReceiverArgs, Probe),
    ) -> Result<ReceiverState, ActorProcessingErr> {
        let outbox = Arc::new(Outbox::new(
            args.config.buffer_limit,
            args.config.buffer_limit_bytes,
        ));
        let counters = Arc::new(Counters::default());
        let redis = RedisClient::new(args.registry.clone(), &args.redis);
        let publisher = Publisher {
            outbox: Arc::clone(&outbox),
            redis: redis.clone(),
            pg: PgClient::new(args.registry.clone(), &args.pg),
            batch_size: args.config.batch_size,
            linger: args.config.linger,
            counters: Arc::clone(&counters),
            probe: probe.clone(),
        };
        let publisher_stop = CancellationToken::new();
        let publisher = tokio::spawn(publisher.run(publisher_stop.clone()));

        let connection_stop = CancellationToken::new();
        let stop = connection_stop.clone();
        probe.set_detail("subscriptions", args.config.instruments.len());
        let connection = tokio::spawn(async move {
            // A cold start learns where each stream ended, so a hole across a
            // process restart is seen too. Best effort: Redis may be down.
            for instrument in &args.config.instruments {
                let stream = streams::trade_stream(instrument);
                let last =
                    tokio::time::timeout(Duration::from_secs(2), redis.last_entry(&stream)).await;
                if let Ok(Ok(Some(entry))) = last {
                    if let Ok(trade) = streams::decode(&entry) {
                        args.continuity.seed(instrument, trade.trade_seq);
                    }
                }
            }
            let connection = Connection {
                config: args.config,
                outbox,
                continuity: args.continuity,
                counters,
                probe: probe.clone(),
            };
            let ended = connection.run(stop).await;
            probe.set_detail(
                "connection",
                if ended.is_ok() { "closed" } else { "failed" },
            );
            let _ = myself.tell(ReceiverMsg::ConnectionEnded(ended));
        });
        Ok(ReceiverState {
            connection_stop,
            connection: Some(connection),
            publisher_stop,
            publisher: Some(publisher),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReceiverMsg>,
        message: ReceiverMsg,
        _state: &mut ReceiverState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReceiverMsg::ConnectionEnded(Err(reason)) => Err(reason.into()),
            ReceiverMsg::ConnectionEnded(Ok(())) => Ok(()),
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
            let _ = connection.await;
        }
        state.publisher_stop.cancel();
        if let Some(publisher) = state.publisher.take() {
            let _ = publisher.await;
        }
        Ok(())
    }
}

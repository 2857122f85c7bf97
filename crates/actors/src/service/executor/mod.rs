//! The executor: turns a strategy's intents (a Redis stream) into orders on
//! the exchange through its own authenticated session, exactly once, and
//! records every order, state change and fill in PostgreSQL.
//!
//! The actor owns two tasks: the intake, which reads intents from the
//! consumer group `executor`, and the engine, which runs one session (see
//! [`engine`]). A lost session ends the incarnation as an outage (not a
//! failure); its supervisor starts a new one, which reconnects and
//! reconciles before it takes another intent. A stop lets the engine drain:
//! no more intents, the requests in flight answered, open orders cancelled
//! (or left, by `on_shutdown`), a logout.

mod config;
mod engine;
pub mod intent;
mod session;

pub use config::{ExecutorConfig, InstrumentLimits, OnShutdown};
pub use engine::{Counters, Ended, GROUP};

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio_util::sync::CancellationToken;

use crate::resource::pg::PgClient;
use crate::resource::redis::RedisClient;
use crate::resource::RideOut;
use keel_core::child::{spawn_with_probe, Incarnation, Outage, StartContext};
use keel_core::mailbox::Tell;
use keel_core::recorded::Recordable;
use keel_core::tasks::{OwnedTask, TaskEnd};

/// What every incarnation of the executor is started with.
#[derive(Clone, Debug)]
pub struct ExecutorArgs {
    /// The `[executor]` section.
    pub config: ExecutorConfig,
    /// RedisActor: intents in, events out.
    pub redis: RedisClient,
    /// PgActor: orders, their history, fills.
    pub pg: PgClient,
    /// Counters kept across incarnations.
    pub counters: Arc<Counters>,
    /// The kill switch, kept across incarnations: a restart does not undo a halt.
    pub halted: Arc<tokio::sync::watch::Sender<bool>>,
}

impl ExecutorArgs {
    /// Arguments for every incarnation.
    pub fn new(config: ExecutorConfig, redis: RedisClient, pg: PgClient) -> Self {
        Self {
            config,
            redis,
            pg,
            counters: Arc::default(),
            halted: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

/// Messages the executor handles.
#[derive(Debug)]
pub enum ExecutorMsg {
    /// The engine ended, with the reason when it failed.
    EngineEnded(Result<(), Ended>),
    /// A task of its own panicked or ended when it should not have.
    TaskFailed(String),
    /// Turns the kill switch on (`true`: stop intake, cancel every open
    /// order) or off; answers the state now.
    Halt(bool, ractor::RpcReplyPort<bool>),
}

impl Recordable for ExecutorMsg {
    fn kind(&self) -> &'static str {
        match self {
            ExecutorMsg::EngineEnded(_) => "EngineEnded",
            ExecutorMsg::TaskFailed(_) => "TaskFailed",
            ExecutorMsg::Halt(..) => "Halt",
        }
    }

    fn summary(&self) -> String {
        match self {
            ExecutorMsg::EngineEnded(Ok(())) => "stopped on request".into(),
            ExecutorMsg::EngineEnded(Err(ended)) => ended.to_string(),
            ExecutorMsg::TaskFailed(reason) => reason.clone(),
            ExecutorMsg::Halt(true, _) => "halt: stop intake, cancel open orders".into(),
            ExecutorMsg::Halt(false, _) => "resume".into(),
        }
    }
}

/// The executor actor.
#[derive(Debug, Default)]
pub struct Executor;

/// Its running state; dropping it aborts both tasks.
#[derive(Debug)]
pub struct ExecutorState {
    halted: Arc<tokio::sync::watch::Sender<bool>>,
    counters: Arc<Counters>,
    engine_stop: CancellationToken,
    engine: Option<OwnedTask>,
    intake_stop: CancellationToken,
    intake: Option<OwnedTask>,
}

impl Executor {
    /// Spawns one incarnation; use as a child factory.
    pub async fn spawn(args: ExecutorArgs, ctx: StartContext) -> Result<ActorCell, SpawnErr> {
        spawn_with_probe(Executor, args, ctx).await
    }
}

impl Actor for Executor {
    type Msg = ExecutorMsg;
    type State = ExecutorState;
    type Arguments = (ExecutorArgs, Incarnation);

    async fn pre_start(
        &self,
        myself: ActorRef<ExecutorMsg>,
        (args, own): (ExecutorArgs, Incarnation),
    ) -> Result<ExecutorState, ActorProcessingErr> {
        let probe = own.probe.clone();
        let counters = Arc::clone(&args.counters);
        probe.set_stats("executor", Arc::clone(&counters));
        let halted = *args.halted.borrow();
        counters
            .halted
            .store(halted, std::sync::atomic::Ordering::Relaxed);
        let consumer = args.config.consumer_name();
        probe.set_detail("consumer", consumer.clone());
        probe.set_detail("group", GROUP);
        let (to_engine, from_intake) = tokio::sync::mpsc::channel(args.config.batch);
        let intake_stop = own.stop.child_token();
        let redis = args
            .redis
            .clone()
            .riding_out(RideOut::until(probe.clone(), intake_stop.clone()));
        let intake = OwnedTask::spawn(
            &myself,
            engine::intake(
                redis,
                consumer,
                args.config.batch,
                args.halted.subscribe(),
                to_engine,
                intake_stop.clone(),
            ),
            |end| match end {
                TaskEnd::Returned(()) => None,
                TaskEnd::Panicked(_) => Some(ExecutorMsg::TaskFailed(end.unexpected("intake"))),
            },
        );
        let engine_stop = own.stop.child_token();
        // The engine's stores wait out an outage until the engine is told to
        // stop; its shutdown still gets to cancel the open orders.
        let stores_stop = CancellationToken::new();
        let mut engine = engine::Engine::new(
            args.config,
            args.redis
                .riding_out(RideOut::until(probe.clone(), stores_stop.clone())),
            args.pg
                .riding_out(RideOut::until(probe.clone(), stores_stop.clone())),
            Arc::clone(&counters),
            probe,
            engine_stop.clone(),
            args.halted.subscribe(),
        );
        let work = async move {
            let ended = engine.run(from_intake).await;
            stores_stop.cancel();
            ended
        };
        let engine = OwnedTask::spawn(&myself, work, |end| match end {
            TaskEnd::Returned(ended) => Some(ExecutorMsg::EngineEnded(ended)),
            TaskEnd::Panicked(_) => Some(ExecutorMsg::TaskFailed(end.unexpected("engine"))),
        });
        Ok(ExecutorState {
            halted: args.halted,
            counters,
            engine_stop,
            engine: Some(engine),
            intake_stop,
            intake: Some(intake),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ExecutorMsg>,
        message: ExecutorMsg,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // A lost session is how the executor reconnects: an outage.
            ExecutorMsg::EngineEnded(Err(Ended::Lost(reason))) => Err(Outage::new(reason).into()),
            ExecutorMsg::EngineEnded(Err(Ended::Refused(reason))) => Err(reason.into()),
            ExecutorMsg::EngineEnded(Ok(())) => Ok(()),
            ExecutorMsg::TaskFailed(reason) => Err(reason.into()),
            ExecutorMsg::Halt(halt, reply) => {
                // Only a change wakes the engine: a second halt does nothing.
                state.halted.send_if_modified(|now| {
                    let changed = *now != halt;
                    *now = halt;
                    changed
                });
                state
                    .counters
                    .halted
                    .store(halt, std::sync::atomic::Ordering::Relaxed);
                let _ = reply.send(halt);
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ExecutorMsg>,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        // Intake first, then the engine's drain (in flight, cancels, logout).
        state.intake_stop.cancel();
        if let Some(intake) = state.intake.take() {
            intake.join().await;
        }
        state.engine_stop.cancel();
        if let Some(engine) = state.engine.take() {
            engine.join().await;
        }
        Ok(())
    }
}

/// Why the kill switch could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaltRefused {
    /// No executor runs in this tree.
    #[error("no executor is running")]
    NoExecutor,
}

/// Turns the kill switch of the executor registered as `name` on or off.
pub async fn set_halted(
    registry: &keel_core::registry::Registry,
    name: &str,
    halt: bool,
) -> Result<bool, HaltRefused> {
    let cell = registry.cell(name).ok_or(HaltRefused::NoExecutor)?;
    let actor: ActorRef<ExecutorMsg> = cell.into();
    match actor
        .ask(
            |reply| ExecutorMsg::Halt(halt, reply),
            Some(std::time::Duration::from_secs(5)),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(state)) => Ok(state),
        _ => Err(HaltRefused::NoExecutor),
    }
}

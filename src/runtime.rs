//! The embedded entry point: start a tree in-process, inspect it, shut it down.

use keel_actors::resource::Status;
use keel_core::mailbox::Tell;
use keel_core::recorded::Recorded;
use keel_core::registry::{ActorKind, ActorState, Registry, Serving, TreeSnapshot};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use std::collections::BTreeMap;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use keel_core::supervisor::{
    ChildEvent, ChildSpec, ShutdownReport, Supervisor, SupervisorArgs, SupervisorConfig,
    SupervisorMsg, TreeExit,
};

/// The root supervisor's registry name.
pub const ROOT: &str = "root";

/// How many child events a slow subscriber may fall behind before it lags.
const EVENT_BUFFER: usize = 1024;

/// What a request to the root supervisor may take beyond the work it asks for
/// (a shutdown's deadline, a child's drain) before the caller stops waiting.
const ASK_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the handle waits for the root supervisor's answers.
#[derive(Clone, Copy, Debug)]
struct Limits {
    shutdown: std::time::Duration,
    restart: std::time::Duration,
}

/// Why a tree could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The root supervisor failed in `pre_start` (e.g. two children share a name).
    #[error("the supervision tree could not start: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    /// The root supervisor died before it had started its children.
    #[error("the root supervisor stopped while starting its children")]
    RootStopped,
}

/// A tree to start: the root supervisor's policy and its children in start order.
#[derive(Debug)]
pub struct Runtime {
    config: SupervisorConfig,
    children: Vec<ChildSpec>,
    registry: Registry,
}

impl Runtime {
    /// A tree supervised by `config`, with no children yet.
    pub fn new(config: SupervisorConfig) -> Self {
        Self {
            config,
            children: Vec::new(),
            registry: Registry::default(),
        }
    }

    /// The registry the tree will report into; children that reach other
    /// actors by name (workers reaching resources) are built with it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tree `config` describes (resources first, then services), ready to start.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let runtime = Self::new(config.supervisor.clone()).inspection(&config.registry);
        let children = crate::tree::children(config, runtime.registry());
        children.into_iter().fold(runtime, Self::child)
    }

    /// Appends a child; children start in the order they are added.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// How much the registry records, as the `[registry]` section says.
    pub fn inspection(self, registry: &crate::config::RegistryConfig) -> Self {
        self.registry.set_recording(registry.record_messages);
        self.message_ring(registry.message_ring)
    }

    /// How many recent messages each actor keeps (0: count only).
    pub fn message_ring(self, capacity: usize) -> Self {
        self.registry.set_ring_capacity(capacity);
        self
    }

    /// Starts the root supervisor and all its children in order; returns once each
    /// child has started (or failed and been scheduled for a restart).
    pub async fn start(self) -> Result<RuntimeHandle, StartError> {
        let registry = self.registry;
        // The root is registered before its children, so it never collides.
        let probe = registry
            .register(ROOT, ActorKind::Supervisor, None)
            .map_err(|e| ractor::SpawnErr::StartupFailed(e.into()))?;
        let started_at = std::time::SystemTime::now();
        let (exit_tx, exit_rx) = watch::channel(None);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let skip_drain = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let limits = Limits {
            shutdown: self.config.shutdown_deadline + ASK_MARGIN,
            restart: self.config.shutdown_timeout + ASK_MARGIN,
        };
        let args = SupervisorArgs {
            config: self.config,
            children: self.children,
            registry: registry.clone(),
            probe: probe.clone(),
            skip_drain: skip_drain.clone(),
            shutdown: shutdown.clone(),
            exit: exit_tx,
            events: events.clone(),
        };
        let (root, _join) = Actor::spawn(None, Recorded::new(Supervisor, probe), args).await?;
        match root.ask(SupervisorMsg::StartChildren, None).await {
            Ok(CallResult::Success(())) => {}
            _ => return Err(StartError::RootStopped),
        }
        tracing::info!(
            children = registry.snapshot().actors.len() - 1,
            "Keel is running."
        );
        Ok(RuntimeHandle {
            started_at,
            root,
            registry,
            skip_drain,
            shutdown,
            limits,
            exit: exit_rx,
            events,
        })
    }
}

/// How a task run under [`RuntimeHandle::task_outcome`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The task finished normally.
    Succeeded,
    /// The task failed and will not be restarted.
    Failed(String),
    /// The supervisor gave up on the whole tree.
    GaveUp(String),
}

impl TaskOutcome {
    /// The `keel task` exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            TaskOutcome::Succeeded => crate::exit_code::OK,
            TaskOutcome::Failed(_) => crate::exit_code::TASK_FAILED,
            TaskOutcome::GaveUp(_) => crate::exit_code::SUPERVISOR_GAVE_UP,
        }
    }
}

/// A running tree.
#[derive(Debug)]
pub struct RuntimeHandle {
    started_at: std::time::SystemTime,
    root: ActorRef<SupervisorMsg>,
    registry: Registry,
    skip_drain: CancellationToken,
    shutdown: CancellationToken,
    limits: Limits,
    exit: watch::Receiver<Option<TreeExit>>,
    events: broadcast::Sender<ChildEvent>,
}

impl RuntimeHandle {
    /// A snapshot of every actor in the tree.
    pub fn tree(&self) -> TreeSnapshot {
        self.registry.snapshot()
    }

    /// What keeps the tree from serving, per actor: empty when every resource
    /// can serve and every permanent worker runs. `/readyz` and the systemd
    /// notifier say this.
    pub fn not_ready(&self) -> BTreeMap<String, String> {
        Self::not_ready_in(&self.tree())
    }

    /// [`RuntimeHandle::not_ready`] of a snapshot already taken.
    pub fn not_ready_in(tree: &TreeSnapshot) -> BTreeMap<String, String> {
        let mut reasons = BTreeMap::new();
        for actor in &tree.actors {
            match actor.kind {
                ActorKind::Resource => {
                    // A resource that never says whether it can serve (the
                    // embedded simulator) is ready once it runs.
                    if actor.state != ActorState::Running {
                        reasons.insert(actor.name.clone(), actor.state.as_str().to_owned());
                    } else if let Some(Serving::Waiting { cause }) = &actor.serving {
                        // The real cause (refused, authentication failed, ...).
                        let reason = match cause {
                            Some(cause) => format!("connecting: {cause}"),
                            None => Status::Connecting.as_str().to_owned(),
                        };
                        reasons.insert(actor.name.clone(), reason);
                    }
                }
                ActorKind::Worker if actor.state != ActorState::Running => {
                    reasons.insert(actor.name.clone(), actor.state.as_str().to_owned());
                }
                _ => {}
            }
        }
        reasons
    }

    /// Whether the root supervisor answered within `within` that the tree runs:
    /// `false` if its loop is stuck (a child's start that never returns, a
    /// runtime whose threads are all blocked), or once the tree shuts down or
    /// gave up. What the systemd watchdog is fed from.
    pub async fn responsive(&self, within: std::time::Duration) -> bool {
        matches!(
            self.root.ask(SupervisorMsg::Ping, Some(within)).await,
            Ok(CallResult::Success(true))
        )
    }

    /// When the tree was started.
    pub fn started_at(&self) -> std::time::SystemTime {
        self.started_at
    }

    /// The live registry (what the admin endpoint serves).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every child exit from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ChildEvent> {
        self.events.subscribe()
    }

    /// Makes a shutdown in progress (or a later one) kill children instead of
    /// draining them, as a second SIGINT does.
    pub fn skip_drain(&self) {
        self.skip_drain.cancel();
    }

    /// Resolves when the tree begins to shut down (asked to, or giving up).
    pub async fn shutting_down(&self) {
        self.shutdown.cancelled().await;
    }

    /// Whether the tree has begun to shut down.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Drains child `name` and starts it again now (as an operator asks).
    pub async fn restart(&self, name: &str) -> Result<(), keel_core::supervisor::RestartRefused> {
        let name = name.to_owned();
        match self
            .root
            .ask(
                |reply| SupervisorMsg::RestartChild(name, reply),
                Some(self.limits.restart),
            )
            .await
        {
            Ok(CallResult::Success(result)) => result,
            _ => Err(keel_core::supervisor::RestartRefused::ShuttingDown),
        }
    }

    /// Whether the tree has ended (shut down, or the supervisor gave up).
    pub fn has_ended(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Drains the tree in stages (producers, consumers, resources) within the
    /// configured deadline and stops it. If the tree had already ended, returns
    /// the report of that ending.
    pub async fn shutdown(&self) -> ShutdownReport {
        let limit = self.limits.shutdown;
        let asked = self.root.ask(SupervisorMsg::Shutdown, Some(limit)).await;
        if let Ok(CallResult::Success(report)) = asked {
            let _ = self.root.get_cell().wait(Some(ASK_MARGIN)).await;
            return report;
        }
        match tokio::time::timeout(limit, self.wait()).await {
            Ok(ended) => ended.report().clone(),
            // The supervisor never answered: nothing is known to have drained.
            Err(_) => ShutdownReport::default(),
        }
    }

    /// Waits until the tree has ended, by shutdown or because the supervisor gave up.
    pub async fn wait(&self) -> TreeExit {
        let mut exit = self.exit.clone();
        loop {
            if let Some(ended) = exit.borrow_and_update().clone() {
                return ended;
            }
            if exit.changed().await.is_err() {
                // The supervisor is gone without saying how: it crashed (a bug).
                return exit.borrow().clone().unwrap_or_else(|| TreeExit::GaveUp {
                    reason: "the root supervisor crashed".into(),
                    report: ShutdownReport::default(),
                });
            }
        }
    }

    /// Waits until child `name` has ended for good (it will not be restarted) or
    /// the tree has ended. This is how `keel task` learns its result.
    pub async fn task_outcome(&self, name: &str) -> TaskOutcome {
        let mut events = self.events.subscribe();
        loop {
            // Subscribed first, then checked: an end that happened before we
            // subscribed shows in the registry, a later one arrives as an event.
            if let Some(outcome) = self.settled_outcome(name) {
                return outcome;
            }
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) if e.name == name && !e.restarting => {
                        return match e.failure {
                            None => TaskOutcome::Succeeded,
                            Some(reason) => TaskOutcome::Failed(reason),
                        };
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                ended = self.wait() => {
                    return match ended {
                        TreeExit::GaveUp { reason, .. } => TaskOutcome::GaveUp(reason),
                        TreeExit::ShutDown { .. } => self
                            .settled_outcome(name)
                            .unwrap_or_else(|| TaskOutcome::Failed("shut down before it finished".into())),
                    };
                }
            }
        }
    }

    fn settled_outcome(&self, name: &str) -> Option<TaskOutcome> {
        if let Some(TreeExit::GaveUp { reason, .. }) = self.exit.borrow().clone() {
            return Some(TaskOutcome::GaveUp(reason));
        }
        let tree = self.registry.snapshot();
        let actor = tree.actor(name)?;
        match actor.state {
            ActorState::Stopped if self.exit.borrow().is_none() => Some(TaskOutcome::Succeeded),
            ActorState::Failed => Some(TaskOutcome::Failed(
                actor
                    .last_failure
                    .as_ref()
                    .map_or_else(String::new, |f| f.reason.clone()),
            )),
            _ => None,
        }
    }
}

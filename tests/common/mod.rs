//! Shared test utilities: a fast supervisor policy, polling with a deadline, and
//! an inline test actor that panics, errors, exits or hangs on purpose.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::child::{spawn_recorded, StartContext, Unrecoverable};
use keel_core::delay::BackoffConfig;
use keel_core::mailbox::Tell;
use keel_core::recorded::Recordable;
use keel_core::supervisor::{ChildSpec, Strategy, SupervisorConfig};
use parking_lot::Mutex;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};

/// A policy with millisecond delays, so restart tests run fast.
pub fn fast_policy(strategy: Strategy) -> SupervisorConfig {
    SupervisorConfig {
        strategy,
        max_restarts: 10,
        period: Duration::from_secs(60),
        stable_after: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(5),
        shutdown_deadline: Duration::from_secs(20),
        backoff: BackoffConfig {
            min: Duration::from_millis(5),
            max: Duration::from_millis(20),
            multiplier: 2.0,
            jitter: 0.0,
        },
    }
}

/// Polls `condition` until it holds or `timeout` passes; panics with `what` then.
pub async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`eventually`], for a condition that needs I/O: polls `probe` until it
/// yields a value, and returns it.
pub async fn eventually_some<T, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the test actors did, in order, across the whole tree.
#[derive(Clone, Debug, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn push(&self, line: String) {
        self.0.lock().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().clone()
    }

    pub fn count(&self, line: &str) -> usize {
        self.0.lock().iter().filter(|l| *l == line).count()
    }

    pub fn position(&self, line: &str) -> Option<usize> {
        self.0.lock().iter().position(|l| l == line)
    }
}

/// How a test actor misbehaves.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// `post_stop` never returns (a drain that hangs).
    pub hang_in_drain: bool,
    /// `pre_start` fails while this counter is above zero (decremented per try);
    /// `u32::MAX` fails forever.
    pub failing_starts: Arc<Mutex<u32>>,
    /// Each `Work` message takes this long.
    pub work_time: Duration,
    /// While set, `pre_start` never returns (a start that hangs).
    pub hang_in_start: Arc<std::sync::atomic::AtomicBool>,
}

/// Messages a test actor understands.
#[derive(Debug)]
pub enum TestMsg {
    Panic,
    Fail,
    FailUnrecoverably,
    Exit,
    Work(u32),
    /// Blocks the actor until the gate is opened, so messages pile up behind it.
    Hold(Arc<tokio::sync::Notify>),
}

impl Recordable for TestMsg {
    fn kind(&self) -> &'static str {
        match self {
            TestMsg::Panic => "Panic",
            TestMsg::Fail => "Fail",
            TestMsg::FailUnrecoverably => "FailUnrecoverably",
            TestMsg::Exit => "Exit",
            TestMsg::Work(_) => "Work",
            TestMsg::Hold(_) => "Hold",
        }
    }

    fn summary(&self) -> String {
        match self {
            TestMsg::Work(n) => format!("work item {n}"),
            other => format!("{other:?}"),
        }
    }
}

struct TestActor {
    name: String,
    journal: Journal,
    behaviour: Behaviour,
}

impl Actor for TestActor {
    type Msg = TestMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<TestMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        if self
            .behaviour
            .hang_in_start
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.journal.push(format!("{} hangs in start", self.name));
            std::future::pending::<()>().await;
        }
        {
            let mut failing = self.behaviour.failing_starts.lock();
            if *failing > 0 {
                if *failing != u32::MAX {
                    *failing -= 1;
                }
                self.journal.push(format!("{} start failed", self.name));
                return Err("refusing to start".into());
            }
        }
        self.journal.push(format!("{} started", self.name));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TestMsg>,
        message: TestMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TestMsg::Panic => panic!("{} panicked on purpose", self.name),
            TestMsg::Fail => return Err(format!("{} failed on purpose", self.name).into()),
            TestMsg::FailUnrecoverably => {
                return Err(Unrecoverable::new(format!("{} cannot go on", self.name)).into())
            }
            TestMsg::Exit => myself.stop(Some("done".into())),
            TestMsg::Work(n) => {
                tokio::time::sleep(self.behaviour.work_time).await;
                self.journal.push(format!("{} did {n}", self.name));
            }
            TestMsg::Hold(gate) => gate.notified().await,
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<TestMsg>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if self.behaviour.hang_in_drain {
            self.journal.push(format!("{} hangs in drain", self.name));
            std::future::pending::<()>().await;
        }
        self.journal.push(format!("{} stopped", self.name));
        Ok(())
    }
}

/// The live incarnation of a test child, so a test can send it messages.
#[derive(Clone, Debug, Default)]
pub struct Live(Arc<Mutex<Option<ActorCell>>>);

impl Live {
    pub fn send(&self, message: TestMsg) {
        let cell = self.0.lock().clone().expect("child has started");
        ActorRef::<TestMsg>::from(cell)
            .tell(message)
            .expect("child accepts messages");
    }

    pub fn id(&self) -> ActorId {
        self.0.lock().as_ref().expect("child has started").get_id()
    }
}

/// A test child built through `make` (`worker`, `resource`, `task` below) with
/// `behaviour`, and a handle on its current incarnation.
pub fn test_child(
    make: fn(String, fn_factory::Factory) -> ChildSpec,
    name: &str,
    journal: &Journal,
    behaviour: Behaviour,
) -> (ChildSpec, Live) {
    let live = Live::default();
    let factory = fn_factory::factory(name, journal.clone(), behaviour, live.clone());
    (make(name.to_owned(), factory), live)
}

pub mod fn_factory {
    //! The factory type test children are built with.
    use super::*;

    pub type Factory = Box<
        dyn Fn(
                StartContext,
            )
                -> futures::future::BoxFuture<'static, Result<ActorCell, ractor::SpawnErr>>
            + Send
            + Sync,
    >;

    pub(super) fn factory(
        name: &str,
        journal: Journal,
        behaviour: Behaviour,
        live: Live,
    ) -> Factory {
        let name = name.to_owned();
        Box::new(move |ctx: StartContext| {
            let actor = TestActor {
                name: name.clone(),
                journal: journal.clone(),
                behaviour: behaviour.clone(),
            };
            let live = live.clone();
            Box::pin(async move {
                let cell = spawn_recorded(actor, (), ctx).await?;
                *live.0.lock() = Some(cell.clone());
                Ok(cell)
            })
        })
    }
}

pub fn worker(name: String, f: fn_factory::Factory) -> ChildSpec {
    ChildSpec::worker(name, f)
}

pub fn resource(name: String, f: fn_factory::Factory) -> ChildSpec {
    ChildSpec::resource(name, f)
}

pub fn task(name: String, f: fn_factory::Factory) -> ChildSpec {
    ChildSpec::task(name, f)
}

pub mod browser;
pub mod certs;
pub mod conservation;
pub mod daemon;
pub mod db;
pub mod deribit;
pub mod executor;
pub mod hosts;
pub mod market;
pub mod pg_cluster;
pub mod pgbouncer;
pub mod process;
pub mod proxy;
pub mod redis;

/// The admin endpoint for `handle` on a free loopback port, behind `token`.
pub async fn admin_endpoint(
    handle: &Arc<keel::RuntimeHandle>,
    token: &str,
) -> keel::admin::AdminServer {
    let config = keel::admin::AdminConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        token: Some(keel_core::secret::Secret::new(token)),
    };
    keel::admin::AdminServer::start(&config, Arc::clone(handle))
        .await
        .expect("the admin endpoint starts")
}

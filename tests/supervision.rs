//! The supervision tree with real test actors: restart types, strategies,
//! intensity, drains and shutdown order, observed through the registry, the
//! shutdown report and the actors' own journal.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use keel::{Runtime, TaskOutcome, TreeExit, ROOT};
use keel_core::registry::{ActorKind, ActorState};
use keel_core::supervisor::{Restart, StopOutcome, Strategy};
use parking_lot::Mutex;

const WAIT: Duration = Duration::from_secs(10);

fn state_of(handle: &keel::RuntimeHandle, name: &str) -> (ActorState, u32) {
    let tree = handle.tree();
    let actor = tree.actor(name).expect("actor is registered");
    (actor.state, actor.restarts)
}

#[tokio::test]
async fn a_permanent_child_that_panics_is_restarted_as_a_new_actor() {
    let journal = Journal::default();
    let (spec, live) = test_child(worker, "w", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(spec)
        .start()
        .await
        .unwrap();
    let first = live.id();

    live.send(TestMsg::Panic);
    eventually("w restarted", WAIT, || {
        state_of(&handle, "w") == (ActorState::Running, 1)
    })
    .await;

    assert_ne!(live.id(), first, "a restart is a new incarnation");
    let tree = handle.tree();
    let w = tree.actor("w").unwrap();
    let failure = w.last_failure.as_ref().expect("failure recorded");
    assert!(
        failure.reason.contains("w panicked on purpose"),
        "{failure:?}"
    );
    assert_eq!(journal.count("w started"), 2);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_permanent_child_that_returns_an_error_is_restarted() {
    let journal = Journal::default();
    let (spec, live) = test_child(worker, "w", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(spec)
        .start()
        .await
        .unwrap();

    live.send(TestMsg::Fail);
    eventually("w restarted", WAIT, || {
        state_of(&handle, "w") == (ActorState::Running, 1)
    })
    .await;
    let tree = handle.tree();
    let reason = &tree
        .actor("w")
        .unwrap()
        .last_failure
        .as_ref()
        .unwrap()
        .reason;
    assert!(reason.contains("w failed on purpose"), "{reason}");
    handle.shutdown().await;
}

#[tokio::test]
async fn restart_types_decide_who_comes_back() {
    let journal = Journal::default();
    let (transient_ok, t_ok) = test_child(worker, "transient-ok", &journal, Behaviour::default());
    let (transient_err, t_err) =
        test_child(worker, "transient-err", &journal, Behaviour::default());
    let (temporary_err, tmp) = test_child(worker, "temporary-err", &journal, Behaviour::default());
    let (permanent_ok, p_ok) = test_child(worker, "permanent-ok", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(transient_ok.with_restart(Restart::Transient))
        .child(transient_err.with_restart(Restart::Transient))
        .child(temporary_err.with_restart(Restart::Temporary))
        .child(permanent_ok)
        .start()
        .await
        .unwrap();

    t_ok.send(TestMsg::Exit);
    t_err.send(TestMsg::Fail);
    tmp.send(TestMsg::Fail);
    p_ok.send(TestMsg::Exit);

    eventually("every child settled", WAIT, || {
        state_of(&handle, "transient-ok") == (ActorState::Stopped, 0)
            && state_of(&handle, "transient-err") == (ActorState::Running, 1)
            && state_of(&handle, "temporary-err") == (ActorState::Failed, 0)
            && state_of(&handle, "permanent-ok") == (ActorState::Running, 1)
    })
    .await;
    assert_eq!(journal.count("transient-ok started"), 1);
    assert_eq!(journal.count("temporary-err started"), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn an_unrecoverable_failure_is_not_retried() {
    let journal = Journal::default();
    let (spec, live) = test_child(worker, "w", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(spec.with_restart(Restart::Transient))
        .start()
        .await
        .unwrap();
    live.send(TestMsg::FailUnrecoverably);
    eventually("w failed for good", WAIT, || {
        state_of(&handle, "w") == (ActorState::Failed, 0)
    })
    .await;
    assert_eq!(journal.count("w started"), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn one_for_all_restarts_every_sibling_in_order() {
    let journal = Journal::default();
    let (a, la) = test_child(worker, "a", &journal, Behaviour::default());
    let (b, lb) = test_child(worker, "b", &journal, Behaviour::default());
    let (c, lc) = test_child(worker, "c", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForAll))
        .child(a)
        .child(b)
        .child(c)
        .start()
        .await
        .unwrap();
    let before = [la.id(), lb.id(), lc.id()];

    lb.send(TestMsg::Panic);
    eventually("all three restarted", WAIT, || {
        ["a", "b", "c"]
            .iter()
            .all(|n| state_of(&handle, n) == (ActorState::Running, 1))
    })
    .await;

    let after = [la.id(), lb.id(), lc.id()];
    for (old, new) in before.iter().zip(after.iter()) {
        assert_ne!(old, new);
    }
    // Siblings were drained (post_stop ran), in reverse order, before the restart.
    let c_stop = journal.position("c stopped").unwrap();
    let a_stop = journal.position("a stopped").unwrap();
    assert!(c_stop < a_stop);
    let lines = journal.lines();
    let restarts: Vec<&String> = lines[a_stop..]
        .iter()
        .filter(|l| l.ends_with("started"))
        .collect();
    assert_eq!(restarts, ["a started", "b started", "c started"]);
    // Only the failed child carries a failure.
    assert!(handle.tree().actor("a").unwrap().last_failure.is_none());
    handle.shutdown().await;
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let journal = Journal::default();
    let (a, la) = test_child(worker, "a", &journal, Behaviour::default());
    let (b, lb) = test_child(worker, "b", &journal, Behaviour::default());
    let (c, lc) = test_child(worker, "c", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::RestForOne))
        .child(a)
        .child(b)
        .child(c)
        .start()
        .await
        .unwrap();
    let (a_before, c_before) = (la.id(), lc.id());

    lb.send(TestMsg::Fail);
    eventually("b and c restarted", WAIT, || {
        state_of(&handle, "b") == (ActorState::Running, 1)
            && state_of(&handle, "c") == (ActorState::Running, 1)
    })
    .await;
    assert_eq!(la.id(), a_before, "a is before b: untouched");
    assert_eq!(state_of(&handle, "a"), (ActorState::Running, 0));
    assert_ne!(lc.id(), c_before);
    handle.shutdown().await;
}

#[tokio::test]
async fn one_for_one_leaves_siblings_alone() {
    let journal = Journal::default();
    let (a, la) = test_child(worker, "a", &journal, Behaviour::default());
    let (b, lb) = test_child(worker, "b", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(a)
        .child(b)
        .start()
        .await
        .unwrap();
    let a_before = la.id();
    lb.send(TestMsg::Panic);
    eventually("b restarted", WAIT, || {
        state_of(&handle, "b") == (ActorState::Running, 1)
    })
    .await;
    assert_eq!(la.id(), a_before);
    assert_eq!(journal.count("a stopped"), 0);
    handle.shutdown().await;
}

#[tokio::test]
async fn too_many_restarts_make_the_supervisor_give_up_and_drain_everything() {
    let journal = Journal::default();
    let mut policy = fast_policy(Strategy::OneForOne);
    policy.max_restarts = 3;
    let (db, _) = test_child(resource, "db", &journal, Behaviour::default());
    let (steady, _) = test_child(worker, "steady", &journal, Behaviour::default());
    let crashing = Behaviour {
        failing_starts: Arc::new(Mutex::new(0)),
        ..Behaviour::default()
    };
    let (flaky, live) = test_child(worker, "flaky", &journal, crashing.clone());
    let handle = Runtime::new(policy)
        .child(db)
        .child(steady)
        .child(flaky)
        .start()
        .await
        .unwrap();

    // From now on every start of `flaky` fails, so each restart fails again.
    *crashing.failing_starts.lock() = u32::MAX;
    live.send(TestMsg::Panic);

    let ended = tokio::time::timeout(WAIT, handle.wait())
        .await
        .expect("gave up in time");
    let TreeExit::GaveUp { reason, report } = ended else {
        panic!("expected the supervisor to give up, got {ended:?}");
    };
    assert!(reason.contains("more than 3 restarts"), "{reason}");
    assert!(reason.contains("flaky"), "{reason}");
    assert_eq!(keel::exit_code::SUPERVISOR_GAVE_UP, 70);
    // The give-up still drains what runs, in order: the worker, then the resource.
    // `flaky` had already ended, so there was nothing of it to stop.
    let names: Vec<&str> = report.stopped.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["steady", "db"]);
    assert!(matches!(
        report.stopped[0].outcome,
        StopOutcome::Drained { .. }
    ));
    assert_eq!(journal.count("steady stopped"), 1);
    assert_eq!(journal.count("db stopped"), 1);
    let tree = handle.tree();
    assert_eq!(tree.actor(ROOT).unwrap().state, ActorState::Failed);
    let flaky = tree.actor("flaky").unwrap();
    assert_eq!(flaky.state, ActorState::Failed);
    assert_eq!(flaky.restarts, 3);
    // Shutting down an ended tree returns the report of how it ended.
    assert_eq!(handle.shutdown().await, report);
}

#[tokio::test]
async fn a_permanent_child_that_cannot_run_ends_the_tree() {
    let journal = Journal::default();
    let (w, live) = test_child(worker, "w", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(w)
        .start()
        .await
        .unwrap();
    live.send(TestMsg::FailUnrecoverably);
    let ended = tokio::time::timeout(WAIT, handle.wait()).await.unwrap();
    assert!(
        matches!(&ended, TreeExit::GaveUp { reason, .. } if reason.contains("cannot run")),
        "{ended:?}"
    );
}

#[tokio::test]
async fn shutdown_drains_every_worker_before_any_resource() {
    let journal = Journal::default();
    let (pg, _) = test_child(resource, "pg", &journal, Behaviour::default());
    let (redis, _) = test_child(resource, "redis", &journal, Behaviour::default());
    let (receiver, _) = test_child(worker, "receiver", &journal, Behaviour::default());
    let (distributor, _) = test_child(worker, "distributor", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(pg)
        .child(redis)
        .child(receiver)
        .child(distributor)
        .start()
        .await
        .unwrap();

    let report = handle.shutdown().await;

    let names: Vec<&str> = report.stopped.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["distributor", "receiver", "redis", "pg"]);
    assert!(report.killed().next().is_none());
    let last_worker_stop = ["receiver stopped", "distributor stopped"]
        .iter()
        .map(|l| journal.position(l).expect("worker drained"))
        .max()
        .unwrap();
    let first_resource_stop = ["pg stopped", "redis stopped"]
        .iter()
        .map(|l| journal.position(l).expect("resource stopped"))
        .min()
        .unwrap();
    assert!(
        last_worker_stop < first_resource_stop,
        "{:?}",
        journal.lines()
    );
    for actor in handle.tree().actors {
        assert_eq!(actor.state, ActorState::Stopped, "{}", actor.name);
    }
}

#[tokio::test]
async fn a_drain_handles_every_queued_message_before_stopping() {
    let journal = Journal::default();
    let slow = Behaviour {
        work_time: Duration::from_millis(2),
        ..Behaviour::default()
    };
    let (w, live) = test_child(worker, "w", &journal, slow);
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(w)
        .start()
        .await
        .unwrap();
    for n in 0..50 {
        live.send(TestMsg::Work(n));
    }
    let report = handle.shutdown().await;
    assert!(matches!(
        report.stopped[0].outcome,
        StopOutcome::Drained { .. }
    ));
    let lines = journal.lines();
    let did: Vec<&String> = lines.iter().filter(|l| l.starts_with("w did")).collect();
    assert_eq!(did.len(), 50, "every queued message was handled");
    assert_eq!(lines.last().map(String::as_str), Some("w stopped"));
    assert_eq!(handle.tree().actor("w").unwrap().messages_handled, 50);
}

#[tokio::test]
async fn a_child_that_hangs_in_drain_is_killed_after_its_timeout_and_reported() {
    let journal = Journal::default();
    let hanging = Behaviour {
        hang_in_drain: true,
        ..Behaviour::default()
    };
    let (db, _) = test_child(resource, "db", &journal, Behaviour::default());
    let (stuck, _) = test_child(worker, "stuck", &journal, hanging);
    let (fine, _) = test_child(worker, "fine", &journal, Behaviour::default());
    let timeout = Duration::from_millis(200);
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(db)
        .child(stuck.with_shutdown_timeout(timeout))
        .child(fine)
        .start()
        .await
        .unwrap();

    let report = handle.shutdown().await;

    let killed: Vec<&str> = report.killed().map(|c| c.name.as_str()).collect();
    assert_eq!(killed, ["stuck"]);
    let stuck = &report.stopped[report.position("stuck").unwrap()];
    assert_eq!(stuck.outcome, StopOutcome::KilledAfterTimeout { timeout });
    assert_eq!(journal.count("stuck hangs in drain"), 1);
    assert_eq!(journal.count("stuck stopped"), 0);
    // The resource still stops, after the killed worker.
    assert!(report.position("db").unwrap() > report.position("stuck").unwrap());
    assert_eq!(journal.count("db stopped"), 1);
}

#[tokio::test]
async fn skipping_the_drain_kills_instead_of_waiting() {
    let journal = Journal::default();
    let hanging = Behaviour {
        hang_in_drain: true,
        ..Behaviour::default()
    };
    let (stuck, _) = test_child(worker, "stuck", &journal, hanging);
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(stuck.with_shutdown_timeout(Duration::from_secs(3600)))
        .start()
        .await
        .unwrap();

    let shutdown = handle.shutdown();
    tokio::pin!(shutdown);
    // Let the drain begin, then ask to skip it, as a second SIGINT does.
    tokio::select! {
        _ = &mut shutdown => panic!("a drain that hangs cannot finish by itself"),
        () = eventually("drain started", WAIT, || journal.count("stuck hangs in drain") == 1) => {}
    }
    handle.skip_drain();
    let report = tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("skip is immediate");
    assert_eq!(report.stopped[0].outcome, StopOutcome::KilledOnRequest);
}

#[tokio::test]
async fn a_child_that_fails_to_start_does_not_block_the_tree_and_is_retried() {
    let journal = Journal::default();
    let flaky_start = Behaviour {
        failing_starts: Arc::new(Mutex::new(2)),
        ..Behaviour::default()
    };
    let (db, _) = test_child(resource, "db", &journal, flaky_start);
    let (w, _) = test_child(worker, "w", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(db)
        .child(w)
        .start()
        .await
        .unwrap();
    assert_eq!(
        journal.count("w started"),
        1,
        "w started although db did not"
    );
    eventually("db started on its third try", WAIT, || {
        state_of(&handle, "db") == (ActorState::Running, 2)
    })
    .await;
    assert_eq!(journal.count("db start failed"), 2);
    handle.shutdown().await;
}

#[tokio::test]
async fn mailbox_depth_counts_messages_waiting_behind_a_busy_actor() {
    let journal = Journal::default();
    let (w, live) = test_child(worker, "w", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(w.with_shutdown_timeout(Duration::from_millis(100)))
        .start()
        .await
        .unwrap();
    let depth = |handle: &keel::RuntimeHandle| handle.tree().actor("w").unwrap().mailbox_depth;
    let gate = Arc::new(tokio::sync::Notify::new());
    live.send(TestMsg::Hold(Arc::clone(&gate)));
    eventually("the actor holds", WAIT, || {
        handle.tree().actor("w").unwrap().messages_handled == 1
    })
    .await;
    for n in 0..7 {
        live.send(TestMsg::Work(n));
    }
    assert_eq!(depth(&handle), 7, "seven messages wait behind the held one");

    gate.notify_one();
    eventually("the mailbox empties", WAIT, || depth(&handle) == 0).await;
    assert_eq!(handle.tree().actor("w").unwrap().messages_handled, 8);

    // A restart that has to kill the held incarnation discards its mailbox; the
    // new incarnation starts at zero.
    live.send(TestMsg::Hold(Arc::clone(&gate)));
    eventually("the actor holds again", WAIT, || {
        handle.tree().actor("w").unwrap().messages_handled == 9
    })
    .await;
    for n in 0..3 {
        live.send(TestMsg::Work(n));
    }
    assert_eq!(depth(&handle), 3);
    handle.restart("w").await.unwrap();
    eventually("restarted with an empty mailbox", WAIT, || {
        let tree = handle.tree();
        let w = tree.actor("w").unwrap();
        w.restarts == 1 && w.state == ActorState::Running && w.mailbox_depth == 0
    })
    .await;
    gate.notify_one();
    handle.shutdown().await;
}

#[tokio::test]
async fn the_registry_shows_the_tree_and_recent_messages() {
    let journal = Journal::default();
    let (db, _) = test_child(resource, "db", &journal, Behaviour::default());
    let (w, live) = test_child(worker, "w", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .message_ring(3)
        .child(db)
        .child(w)
        .start()
        .await
        .unwrap();
    for n in 0..5 {
        live.send(TestMsg::Work(n));
    }
    eventually("messages handled", WAIT, || {
        handle.tree().actor("w").unwrap().messages_handled == 5
    })
    .await;

    let tree = handle.tree();
    assert_eq!(tree.children_of(ROOT), ["db", "w"]);
    let db = tree.actor("db").unwrap();
    assert_eq!(db.kind, ActorKind::Resource);
    assert_eq!(db.parent.as_deref(), Some(ROOT));
    assert_eq!(db.state, ActorState::Running);
    assert!(db.uptime.is_some());
    let root = tree.actor(ROOT).unwrap();
    assert_eq!(root.kind, ActorKind::Supervisor);
    assert!(root.messages_handled >= 1, "root recorded StartChildren");

    let recent = handle.registry().messages("w", 10).unwrap();
    let summaries: Vec<&str> = recent.iter().map(|m| m.summary.as_str()).collect();
    assert_eq!(summaries, ["work item 2", "work item 3", "work item 4"]);
    assert!(recent.iter().all(|m| m.kind == "Work"));
    handle.shutdown().await;
}

#[tokio::test]
async fn two_children_cannot_share_a_name() {
    let journal = Journal::default();
    let (a, _) = test_child(worker, "same", &journal, Behaviour::default());
    let (b, _) = test_child(worker, "same", &journal, Behaviour::default());
    let err = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(a)
        .child(b)
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("`same` is already registered"),
        "{err}"
    );
    assert!(journal.lines().is_empty(), "nothing started");
}

#[tokio::test]
async fn task_outcomes_become_exit_codes() {
    // A task that finishes.
    let journal = Journal::default();
    let (t, live) = test_child(task, "job", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(t)
        .start()
        .await
        .unwrap();
    live.send(TestMsg::Exit);
    let outcome = tokio::time::timeout(WAIT, handle.task_outcome("job"))
        .await
        .unwrap();
    assert_eq!(outcome, TaskOutcome::Succeeded);
    assert_eq!(outcome.exit_code(), 0);
    handle.shutdown().await;

    // A task that fails in a way a retry cannot fix.
    let (t, live) = test_child(task, "job", &journal, Behaviour::default());
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(t)
        .start()
        .await
        .unwrap();
    live.send(TestMsg::FailUnrecoverably);
    let outcome = tokio::time::timeout(WAIT, handle.task_outcome("job"))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, TaskOutcome::Failed(r) if r.contains("cannot go on")),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 1);
    handle.shutdown().await;

    // A task that keeps failing until the supervisor gives up.
    let mut policy = fast_policy(Strategy::OneForOne);
    policy.max_restarts = 2;
    let always_failing = Behaviour {
        failing_starts: Arc::new(Mutex::new(0)),
        ..Behaviour::default()
    };
    let (t, live) = test_child(task, "job", &journal, always_failing.clone());
    let handle = Runtime::new(policy).child(t).start().await.unwrap();
    *always_failing.failing_starts.lock() = u32::MAX;
    live.send(TestMsg::Fail);
    let outcome = tokio::time::timeout(WAIT, handle.task_outcome("job"))
        .await
        .unwrap();
    assert!(matches!(outcome, TaskOutcome::GaveUp(_)), "{outcome:?}");
    assert_eq!(outcome.exit_code(), 70);
}

/// An actor that panics on every message it handles, and sends itself one as
/// soon as it starts: a bug no restart fixes.
struct Panicky;

#[derive(Debug)]
struct Boom;

impl keel_core::recorded::Recordable for Boom {
    fn kind(&self) -> &'static str {
        "Boom"
    }
    fn summary(&self) -> String {
        "boom".into()
    }
}

impl ractor::Actor for Panicky {
    type Msg = Boom;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ractor::ActorRef<Boom>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        use keel_core::mailbox::Tell;
        myself.tell(Boom)?;
        Ok(())
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<Boom>,
        _: Boom,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        panic!("panicky panics on every message");
    }
}

#[tokio::test]
async fn a_worker_that_panics_on_every_message_makes_the_default_policy_give_up() {
    let spec = keel_core::supervisor::ChildSpec::worker("panicky", |ctx| {
        keel_core::child::spawn_recorded(Panicky, (), ctx)
    });
    let started = std::time::Instant::now();
    let handle = Runtime::new(keel_core::supervisor::SupervisorConfig::default())
        .child(spec)
        .start()
        .await
        .unwrap();
    // Six restarts at 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 s (default backoff): the
    // sixth is one more than the default five per minute.
    let ended = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .expect("the supervisor gave up in time");
    match ended {
        TreeExit::GaveUp { reason, .. } => {
            assert!(reason.contains("more than 5 restarts"), "{reason}");
            assert!(reason.contains("panicky panics"), "{reason}");
        }
        other => panic!("expected a give-up, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// An actor whose inner task panics a moment after it starts.
struct InnerPanic;

#[derive(Debug)]
enum InnerMsg {
    TaskFailed(String),
}

impl keel_core::recorded::Recordable for InnerMsg {
    fn kind(&self) -> &'static str {
        "TaskFailed"
    }
    fn summary(&self) -> String {
        let InnerMsg::TaskFailed(reason) = self;
        reason.clone()
    }
}

impl ractor::Actor for InnerPanic {
    type Msg = InnerMsg;
    type State = keel_core::tasks::OwnedTask;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ractor::ActorRef<InnerMsg>,
        _: (),
    ) -> Result<Self::State, ractor::ActorProcessingErr> {
        let inner = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            panic!("the inner loop broke");
        };
        Ok(keel_core::tasks::OwnedTask::spawn(
            &myself,
            inner,
            |end: keel_core::tasks::TaskEnd<()>| {
                Some(InnerMsg::TaskFailed(end.unexpected("inner")))
            },
        ))
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<InnerMsg>,
        InnerMsg::TaskFailed(reason): InnerMsg,
        _: &mut Self::State,
    ) -> Result<(), ractor::ActorProcessingErr> {
        Err(reason.into())
    }
}

#[tokio::test]
async fn a_panic_in_a_workers_inner_task_restarts_the_worker_and_the_tree_says_why() {
    let spec = keel_core::supervisor::ChildSpec::worker("inner", |ctx| {
        keel_core::child::spawn_recorded(InnerPanic, (), ctx)
    });
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(spec)
        .start()
        .await
        .unwrap();
    eventually("inner restarted", WAIT, || {
        handle
            .tree()
            .actor("inner")
            .is_some_and(|a| a.restarts >= 1)
    })
    .await;
    let tree = handle.tree();
    let failure = tree.actor("inner").unwrap().last_failure.clone().unwrap();
    assert!(
        failure
            .reason
            .contains("task `inner` panicked: the inner loop broke"),
        "{failure:?}"
    );
    handle.shutdown().await;
}

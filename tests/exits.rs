//! How a daemon's process ends, tested on real processes: this test binary runs
//! itself again as a daemon (`--child SCENARIO`), through the same
//! `keel::cli::run_daemon` that `keel run` uses, and watches it from outside.
//!
//! Its own harness (`harness = false`): what is under test calls
//! `std::process::exit`, which must not end the test runner.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keel::config::Config;
use keel::Runtime;
use keel_core::child::{spawn_recorded, StartContext};
use keel_core::mailbox::Tell;
use keel_core::recorded::Recordable;
use keel_core::supervisor::ChildSpec;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// The defaults, less the admin endpoint (its port could be taken).
fn daemon_config() -> Config {
    let mut config = Config::default();
    config.admin.enabled = false;
    config
}

#[derive(Debug)]
struct Tick;

impl Recordable for Tick {
    fn kind(&self) -> &'static str {
        "Tick"
    }
    fn summary(&self) -> String {
        "tick".into()
    }
}

/// Panics on every message, and sends itself one as soon as it starts.
struct Panicky;

impl Actor for Panicky {
    type Msg = Tick;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<Tick>, _: ()) -> Result<(), ActorProcessingErr> {
        me.tell(Tick)?;
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Tick>,
        _: Tick,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        panic!("a bug hit on every message");
    }
}

/// Never yields once it is asked to stop: its drain spins on its thread.
struct Spinner;

impl Actor for Spinner {
    type Msg = Tick;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Tick>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<Tick>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        #[allow(clippy::empty_loop)]
        loop {
            std::hint::spin_loop();
        }
    }
}

fn spawn<A>(
    actor: A,
) -> impl Fn(
    StartContext,
) -> futures::future::BoxFuture<'static, Result<ractor::ActorCell, ractor::SpawnErr>>
       + Send
       + Sync
       + 'static
where
    A: Actor<Arguments = ()> + Clone,
    A::Msg: Recordable,
{
    move |ctx| {
        let actor = actor.clone();
        Box::pin(async move { spawn_recorded(actor, (), ctx).await })
    }
}

impl Clone for Panicky {
    fn clone(&self) -> Self {
        Panicky
    }
}

impl Clone for Spinner {
    fn clone(&self) -> Self {
        Spinner
    }
}

/// The daemon side of a scenario: returns the process exit code.
fn child(scenario: &str) -> u8 {
    keel::logging::init(keel::logging::LogFormat::Text);
    let config = daemon_config();
    let supervisor = config.supervisor.clone();
    match scenario {
        "panicky" => keel::cli::run_daemon(&config, move || {
            Runtime::new(supervisor).child(ChildSpec::worker("panicky", spawn(Panicky)))
        }),
        // Two spinners, one per worker thread of a 2-core machine (and more on
        // larger ones): once they drain, the runtime itself makes no progress.
        "spinners" => keel::cli::run_daemon(&config, move || {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            (0..threads).fold(Runtime::new(supervisor), |tree, i| {
                tree.child(ChildSpec::worker(format!("spinner-{i}"), spawn(Spinner)))
            })
        }),
        other => panic!("unknown scenario {other}"),
    }
}

/// Starts this binary as the daemon of `scenario`, its log readable line by line.
fn start(scenario: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["--child", scenario])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => {
                seen.push(line);
                return seen;
            }
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {needle:?} within {within:?}; saw {seen:#?}"),
        }
    }
}

fn exit_within(child: &mut Child, within: Duration) -> (i32, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the daemon") {
            return (status.code().unwrap_or(-1), started.elapsed());
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("the daemon did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn a_worker_that_panics_on_every_message_makes_the_daemon_exit_70() {
    let (mut child, lines) = start("panicky");
    let deadline = daemon_config().supervisor.shutdown_deadline;
    wait_for(&lines, "Supervisor gives up", Duration::from_secs(30));
    let (code, took) = exit_within(&mut child, deadline);
    assert_eq!(code, 70, "exit code after giving up");
    assert!(took < deadline, "exited {took:?} after giving up");
}

fn a_task_that_never_yields_cannot_keep_the_process_alive() {
    let (mut child, lines) = start("spinners");
    wait_for(&lines, "Keel is running.", Duration::from_secs(30));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The shutdown deadline, then the watchdog's grace, then a little slack.
    let supervisor = daemon_config().supervisor;
    let bound = supervisor.shutdown_deadline + Duration::from_secs(5) + Duration::from_secs(3);
    let (code, took) = exit_within(&mut child, bound);
    assert_eq!(code, 1, "not everything drained");
    assert!(
        took >= supervisor.shutdown_deadline,
        "the watchdog waited for the deadline ({took:?})"
    );
    let said = wait_for(&lines, "exiting hard", Duration::from_secs(1));
    let last = said.last().cloned().unwrap_or_default();
    assert!(
        last.contains("spinner-"),
        "the log names what was still running: {last}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let scenario = args.get(i + 1).cloned().unwrap_or_default();
        std::process::exit(i32::from(child(&scenario)));
    }
    // `cargo test NAME` passes a filter; flags (`--nocapture`, ...) are ignored.
    let filter: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 2] = [
        (
            "a_worker_that_panics_on_every_message_makes_the_daemon_exit_70",
            a_worker_that_panics_on_every_message_makes_the_daemon_exit_70,
        ),
        (
            "a_task_that_never_yields_cannot_keep_the_process_alive",
            a_task_that_never_yields_cannot_keep_the_process_alive,
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

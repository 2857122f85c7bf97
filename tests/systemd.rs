//! Keel under systemd: the shipped unit file, and the notify protocol spoken to
//! a real datagram socket standing in for systemd, with the unit's own
//! watchdog timeout.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

mod common;

use common::db::{TestDb, PG_PORT};
use common::process::{closed_port, signal, spawn_keel_with, wait_exit, KEEL};
use common::redis::{PrivateRedis, TestPrefix};
use common::{eventually, test_child, worker, Behaviour, Journal, TestMsg};
use keel::systemd::{Notifier, Reporter};
use keel_core::supervisor::SupervisorConfig;

/// How long after its shutdown deadline `keel run` exits hard (README, Shutdown).
const HARD_EXIT_GRACE: Duration = Duration::from_secs(5);

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/keel.service")
}

fn unit() -> String {
    std::fs::read_to_string(unit_path()).expect("contrib/systemd/keel.service")
}

/// Every value of `key` in the unit, in order.
fn unit_values(key: &str) -> Vec<String> {
    unit()
        .lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim().to_owned())
        .collect()
}

fn unit_duration(key: &str) -> Duration {
    let values = unit_values(key);
    assert_eq!(values.len(), 1, "one {key}= in the unit");
    humantime::parse_duration(&values[0]).unwrap_or_else(|e| panic!("{key}={}: {e}", values[0]))
}

/// What the stand-in for systemd received, as it arrives.
struct Manager {
    path: PathBuf,
    received: mpsc::Receiver<String>,
    /// Everything taken off `received` so far.
    seen: Vec<String>,
}

impl Manager {
    fn listen(dir: &Path) -> Self {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (tx, received) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 4096];
            loop {
                match socket.recv(&mut buffer) {
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                        if tx.send(text).is_err() {
                            return;
                        }
                    }
                    // Timed out: is anyone still listening?
                    Err(_) => {
                        if tx.send(String::new()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Self {
            path,
            received,
            seen: Vec::new(),
        }
    }

    fn address(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next notification to arrive before `deadline`, also kept in `seen`.
    fn next_before(&mut self, deadline: Instant) -> Option<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.received.recv_timeout(left) {
                Ok(text) if text.is_empty() => {}
                Ok(text) => {
                    self.seen.push(text.clone());
                    return Some(text);
                }
                Err(_) => return None,
            }
        }
    }

    /// The next notification containing `needle`; panics after `timeout`.
    fn next_containing(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(text) = self.next_before(deadline) {
            if text.contains(needle) {
                return text;
            }
        }
        panic!(
            "no notification containing {needle:?} within {timeout:?}; received {:?}",
            self.seen
        )
    }

    /// When each notification containing `needle` arrived within `window`.
    fn arrivals(&mut self, needle: &str, window: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + window;
        let mut at = Vec::new();
        while let Some(text) = self.next_before(deadline) {
            if text.contains(needle) {
                at.push(Instant::now());
            }
        }
        at
    }

    /// Takes what has arrived so far off the queue.
    fn drain(&mut self) {
        while self.next_before(Instant::now()).is_some() {}
    }
}

#[test]
fn the_unit_passes_systemd_analyze_and_fits_the_default_configuration() {
    let defaults = keel::config::Config::default().supervisor;
    // The production example keeps the same drain limits.
    let production = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/production.example.toml"),
    )
    .unwrap();
    let production: toml::Table = toml::from_str(&production).unwrap();
    for key in ["shutdown_timeout", "shutdown_deadline"] {
        let value = production["supervisor"][key].as_str().unwrap();
        let value = humantime::parse_duration(value).unwrap();
        let default = if key == "shutdown_timeout" {
            defaults.shutdown_timeout
        } else {
            defaults.shutdown_deadline
        };
        assert!(
            value <= default,
            "production {key} {value:?} exceeds what the unit allows"
        );
    }
    // systemd's stop timeout must not cut Keel's own drain short.
    let stop = unit_duration("TimeoutStopSec");
    assert!(
        stop > defaults.shutdown_deadline + HARD_EXIT_GRACE,
        "TimeoutStopSec {stop:?} is not above shutdown_deadline {:?} + {HARD_EXIT_GRACE:?}",
        defaults.shutdown_deadline
    );
    // A restart holds the supervisor for one child's drain.
    let watchdog = unit_duration("WatchdogSec");
    assert!(
        watchdog > defaults.shutdown_timeout * 2,
        "WatchdogSec {watchdog:?}"
    );
    assert_eq!(unit_values("Type"), ["notify"]);
    // What restarting cannot fix is not restarted.
    let prevented = unit_values("RestartPreventExitStatus").join(" ");
    for code in [keel::exit_code::BAD_CONFIG, keel::exit_code::USAGE] {
        assert!(
            prevented.split(' ').any(|c| c == code.to_string()),
            "{code} restarts"
        );
    }

    // The credentials the unit hands over are keys Keel reads: `keel check`
    // accepts the production example with them (and its TLS files where an
    // operator puts them) and never prints them.
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let mut envs: Vec<(String, String)> = Vec::new();
    for value in unit_values("Environment") {
        let (key, path) = value.split_once('=').unwrap();
        if let Some(name) = path.strip_prefix("%d/") {
            let file = credentials.join(name);
            std::fs::write(&file, format!("s3cret-{name}\n")).unwrap();
            envs.push((key.to_owned(), file.to_str().unwrap().to_owned()));
        }
    }
    assert!(envs.len() >= 4, "the unit hands over credentials: {envs:?}");
    let tls = dir.path().join("tls");
    let made = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sim-cert"))
        .arg(&tls)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    for (key, file) in [
        ("KEEL__POSTGRES__CA_FILE", "ca.pem"),
        ("KEEL__REDIS__CA_FILE", "ca.pem"),
        ("KEEL__REDIS__CERT_FILE", "cert.pem"),
        ("KEEL__REDIS__KEY_FILE", "key.pem"),
    ] {
        envs.push((key.to_owned(), tls.join(file).to_str().unwrap().to_owned()));
    }
    let check = Command::new(KEEL)
        .args(["check", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/production.example.toml"))
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "keel check: {printed}");
    assert!(!printed.contains("s3cret"), "a secret printed: {printed}");

    let Ok(analyze) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit was not verified");
        return;
    };
    assert!(analyze.status.success());
    // verify wants ExecStart's binary to exist: point it at the one built here.
    let copy = dir.path().join("keel.service");
    std::fs::write(&copy, unit().replace("/usr/local/bin/keel", KEEL)).unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(verified.status.success(), "systemd-analyze verify: {said}");
    // It warns (unknown keys, keys in the wrong section) without failing.
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| !l.contains("has not been booted with systemd") && !l.contains("bus"))
        .collect();
    assert!(warnings.is_empty(), "systemd-analyze verify: {warnings:?}");
}

/// `keel run` as systemd starts it from the unit: READY=1 only once Redis,
/// down at start, is up; STATUS= naming what it waits for; the watchdog fed
/// while it rides out an outage; STOPPING=1 at SIGTERM.
#[test]
fn keel_run_tells_systemd_when_it_is_ready_what_it_waits_for_and_that_it_lives() {
    let dir = tempfile::tempdir().unwrap();
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::create());
    let prefix = TestPrefix::new();
    let mut redis = PrivateRedis::start();
    redis.stop();
    // The default configuration, as the unit runs it; only addresses differ.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/keel.toml");
    let sim = closed_port();
    let overrides = [
        ("KEEL__POSTGRES__URL", db.url(PG_PORT)),
        (
            "KEEL__REDIS__URL",
            format!("redis://127.0.0.1:{}/0", redis.port),
        ),
        ("KEEL__REDIS__KEY_PREFIX", prefix.prefix.clone()),
        ("KEEL__SIM__LISTEN", format!("127.0.0.1:{sim}")),
        (
            "KEEL__RECEIVER__URL",
            format!("ws://127.0.0.1:{sim}/ws/api/v2"),
        ),
        (
            "KEEL__BACKFILL__HTTP_URL",
            format!("http://127.0.0.1:{sim}"),
        ),
        ("KEEL__ADMIN__LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let mut manager = Manager::listen(dir.path());
    let watchdog = unit_duration("WatchdogSec");
    let usec = watchdog.as_micros().to_string();
    let mut envs: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.push(("NOTIFY_SOCKET", manager.address()));
    envs.push(("WATCHDOG_USEC", &usec));
    let (mut child, _lines) = spawn_keel_with(&["run", "--log-format", "json"], &config, &envs);

    let waiting = manager.next_containing("redis (connecting", Duration::from_secs(30));
    assert!(waiting.starts_with("STATUS=Waiting for "), "{waiting}");
    assert!(
        !manager.seen.iter().any(|m| m.contains("READY=1")),
        "ready before Redis is: {:?}",
        manager.seen
    );
    // Alive while not ready: the watchdog is fed from the start.
    manager.next_containing("WATCHDOG=1", watchdog / 2 + Duration::from_secs(5));

    redis.resume();
    let ready = manager.next_containing("READY=1", Duration::from_secs(30));
    assert!(ready.contains("STATUS=Ready"), "{ready}");

    // An outage after start: Keel says what it waits for and stays alive.
    redis.stop();
    manager.next_containing("redis (connecting", Duration::from_secs(30));
    manager.next_containing("WATCHDOG=1", watchdog / 2 + Duration::from_secs(5));
    redis.resume();
    manager.next_containing("STATUS=Ready", Duration::from_secs(60));

    signal(&child, "TERM");
    manager.next_containing("STOPPING=1", Duration::from_secs(5));
    let status = wait_exit(&mut child, Duration::from_secs(25));
    assert_eq!(status.code(), Some(0));
    // Once stopping, no more pings: systemd's stop timeout governs.
    manager.drain();
    let after = manager
        .seen
        .iter()
        .skip_while(|m| !m.contains("STOPPING=1"))
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    assert_eq!(
        after, 0,
        "watchdog pings after STOPPING=1: {:?}",
        manager.seen
    );
}

/// A supervisor whose loop is stuck (here in a child's start that never
/// returns) stops feeding the watchdog, so systemd kills and restarts the
/// process instead of leaving it hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_stuck_in_a_childs_start_stops_feeding_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::default();
    let behaviour = Behaviour::default();
    let hang = Arc::clone(&behaviour.hang_in_start);
    let (spec, live) = test_child(worker, "stuck", &journal, behaviour);
    let handle = keel::Runtime::new(SupervisorConfig::default())
        .child(spec)
        .start()
        .await
        .unwrap();
    let handle = Arc::new(handle);
    let mut manager = Manager::listen(dir.path());
    let watchdog = unit_duration("WatchdogSec");
    let notifier = Notifier::to(manager.address()).unwrap();
    let _reporter = Reporter::start(Arc::clone(&handle), notifier, Some(watchdog));

    let ready = manager.next_containing("READY=1", Duration::from_secs(10));
    assert!(ready.contains("STATUS=Ready"), "{ready}");
    manager.next_containing("WATCHDOG=1", watchdog / 2 + Duration::from_secs(5));

    // The child fails; its restart's start never returns.
    hang.store(true, std::sync::atomic::Ordering::SeqCst);
    live.send(TestMsg::Fail);
    eventually(
        "the restart hangs in start",
        Duration::from_secs(10),
        || journal.count("stuck hangs in start") == 1,
    )
    .await;
    manager.next_containing("stuck (starting)", Duration::from_secs(5));
    // A healthy tree pings twice in one watchdog period; this one not once,
    // so systemd's watchdog fires. (A ping answered just before the hang may
    // still arrive in its first second.)
    let hung = Instant::now();
    manager.drain();
    let late = manager.arrivals("WATCHDOG=1", watchdog + Duration::from_secs(1));
    assert!(
        late.iter().all(|at| *at < hung + Duration::from_secs(1)),
        "the watchdog was fed by a stuck supervisor: {:?}",
        manager.seen
    );
}

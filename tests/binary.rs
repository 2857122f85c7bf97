//! The built `keel` binary: signals, exit codes, configuration errors.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::process::{
    closed_port, signal, spawn_keel, stderr_lines, wait_exit, wait_for_line, write_config, Keel,
    KEEL,
};

use common::db::{TestDb, PG_PORT};
use common::redis::TestPrefix;

#[test]
fn sigterm_shuts_the_daemon_down_cleanly_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown_timeout = Duration::from_secs(2);
    // Its own database and key prefix, like every test; built-in defaults
    // otherwise (the receiver keeps retrying 127.0.0.1:8765, which is fine here).
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::create());
    let prefix = TestPrefix::new();
    let config = write_config(
        dir.path(),
        &format!(
            "[supervisor]\nshutdown_timeout = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [postgres]\nurl = \"{}\"\n[redis]\nkey_prefix = \"{}\"\n",
            db.url(PG_PORT),
            prefix.prefix
        ),
    );
    let (mut child, lines) = spawn_keel(&["run", "--log-format", "json"], &config);
    let running = wait_for_line(&lines, "Keel is running.", Duration::from_secs(30));
    assert!(running.starts_with('{'), "JSON logs: {running}");

    signal(&child, "TERM");
    let status = wait_exit(&mut child, shutdown_timeout + Duration::from_secs(3));
    assert_eq!(status.code(), Some(0));
    wait_for_line(
        &lines,
        "Shutdown complete; everything drained.",
        Duration::from_secs(1),
    );
}

#[test]
fn a_bad_configuration_exits_78_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[supervisor]\nmax_restarts = -1\n");
    for command in ["run", "check"] {
        let output = Command::new(KEEL)
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&config.display().to_string()), "{stderr}");
        assert!(stderr.contains("supervisor.max_restarts"), "{stderr}");
    }
}

#[test]
fn a_missing_configuration_file_exits_78() {
    let output = Command::new(KEEL)
        .args(["check", "--config", "/nonexistent/keel.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/keel.toml"), "{stderr}");
}

#[test]
fn check_prints_the_effective_configuration_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[supervisor]\nstrategy = \"one_for_all\"\n");
    let output = Command::new(KEEL)
        .args(["check", "--config"])
        .arg(&config)
        .env("KEEL__SUPERVISOR__MAX_RESTARTS", "4")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&output.stdout)).unwrap();
    assert_eq!(
        printed["supervisor"]["strategy"].as_str(),
        Some("one_for_all")
    );
    assert_eq!(printed["supervisor"]["max_restarts"].as_integer(), Some(4));
    // Defaults are printed too, so the output is the whole effective configuration.
    assert_eq!(
        printed["supervisor"]["backoff"]["max"].as_str(),
        Some("30s")
    );
}

#[test]
fn an_unknown_task_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let output = Command::new(KEEL)
        .args(["task", "no-such-task", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn an_interrupted_task_exits_75_so_it_can_be_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = TestPrefix::new();
    // Nothing listens on port 9: the janitor waits for PostgreSQL, retrying.
    let config = write_config(
        dir.path(),
        &format!(
            "[supervisor]\nshutdown_timeout = \"1s\"\n\
             [postgres]\nurl = \"postgres://postgres@127.0.0.1:9/none\"\n\
             [redis]\nkey_prefix = \"{}\"\n",
            prefix.prefix
        ),
    );
    let (mut child, lines) = spawn_keel(&["task", "janitor"], &config);
    wait_for_line(&lines, "Cannot reach the server", Duration::from_secs(30));
    signal(&child, "INT");
    // The task is drained (1 s here), then the resources stop.
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(75));
    wait_for_line(&lines, "Interrupted", Duration::from_secs(1));
}

/// User plus system CPU time of a process so far (`/proc/PID/stat`).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; fields after it are space-separated.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_sec = 100; // USER_HZ on Linux
    Duration::from_millis(ticks * 1000 / per_sec)
}

/// A free TCP port with nothing listening on it.
#[test]
fn an_idle_daemon_waiting_for_redis_does_not_spin_and_still_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::create());
    // Nothing listens where Redis should be; the exchange makes no trades.
    let config = write_config(
        dir.path(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[sim]\nlisten = \"127.0.0.1:{sim}\"\ntrades_per_sec = 0.0\n\
             [receiver]\nurl = \"ws://127.0.0.1:{sim}/ws/api/v2\"\n\
             [postgres]\nurl = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:{}/0\"\n",
            db.url(PG_PORT),
            closed_port(),
            sim = closed_port(),
        ),
    );
    let (mut child, lines) = spawn_keel(&["run"], &config);
    wait_for_line(&lines, "Keel is running.", Duration::from_secs(30));
    wait_for_line(
        &lines,
        "Resource unavailable; waiting for it.",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_time(child.id());
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_time(child.id()) - before;
    // A busy retry loop would use the whole 10 s; waiting uses next to nothing
    // (the release build measures well under 2% of a core, see the README).
    assert!(
        used < Duration::from_secs(1),
        "{used:?} of CPU in 10 s while waiting"
    );

    signal(&child, "TERM");
    let deadline = Duration::from_secs(20);
    let status = wait_exit(&mut child, deadline);
    assert_eq!(status.code(), Some(0), "everything drained");
}

/// Accepts connections and never answers: a server that is "there" but hangs,
/// the worst kind of unreachable.
fn blackhole() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    port
}

#[test]
fn sigterm_while_postgres_hangs_exits_within_the_shutdown_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = TestPrefix::new();
    let sim = closed_port();
    // The default configuration but for addresses: PostgreSQL accepts and never
    // answers, so every call to it hangs until its own timeouts.
    let config = write_config(
        dir.path(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[sim]\nlisten = \"127.0.0.1:{sim}\"\ntrades_per_sec = 200.0\n\
             [receiver]\nurl = \"ws://127.0.0.1:{sim}/ws/api/v2\"\n\
             [postgres]\nurl = \"postgres://postgres@127.0.0.1:{}/keel\"\n[redis]\nkey_prefix = \"{}\"\n",
            blackhole(),
            prefix.prefix
        ),
    );
    let (mut child, lines) = spawn_keel(&["run"], &config);
    wait_for_line(&lines, "Keel is running.", Duration::from_secs(30));
    // Trades reach Redis; the distributor's and the analyzer's calls hang.
    std::thread::sleep(Duration::from_secs(8));
    signal(&child, "TERM");
    let deadline = Duration::from_secs(20);
    let started = Instant::now();
    let status = wait_exit(&mut child, deadline);
    let took = started.elapsed();
    assert!(took < deadline, "exited {took:?} after SIGTERM");
    // The last word names what had to be killed, if anything.
    let last = wait_for_line(&lines, "Shutdown complete", Duration::from_secs(1));
    match status.code() {
        Some(0) => assert!(last.contains("everything drained"), "{last}"),
        Some(1) => assert!(last.contains("killed"), "{last}"),
        other => panic!("exit code {other:?}: {last}"),
    }
}

#[test]
fn global_options_are_taken_anywhere_and_errors_name_the_wrong_argument() {
    // --config after the task's own arguments is still --config.
    let output = Command::new(KEEL)
        .args([
            "task",
            "backfill",
            "--gaps",
            "--config",
            "/nonexistent/keel.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/keel.toml"), "{stderr}");

    // An unknown flag is named as such, with exit 64.
    let output = Command::new(KEEL)
        .args([
            "task",
            "backfill",
            "--gaps",
            "--bogus",
            "--log-format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--bogus"), "{stderr}");
    assert!(
        !stderr.contains("--gaps'"),
        "names only the wrong one: {stderr}"
    );
}

#[test]
fn without_a_configuration_file_commands_run_on_the_defaults_in_code_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(KEEL)
        .arg("check")
        .current_dir(dir.path())
        .env_remove("KEEL_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("using the defaults in code"), "{stderr}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("max_restarts = 5"), "{printed}");
}

#[test]
fn each_out_of_range_configuration_value_exits_78_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[receiver]\ninstruments = []", "receiver.instruments"),
        ("[receiver]\ninstruments = [\"\"]", "receiver.instruments"),
        ("[receiver]\nurl = \"ws://\"", "receiver.url"),
        ("[backfill]\nhttp_url = \"not a url\"", "backfill.http_url"),
        (
            "[receiver]\nstall_timeout = \"500000000000y\"",
            "receiver.stall_timeout",
        ),
        (
            "[janitor]\ntrades_retention = \"0s\"",
            "janitor.trades_retention",
        ),
        (
            "[schedule]\njanitor_every = \"0s\"",
            "schedule.janitor_every",
        ),
        ("[redis]\nstream_maxlen = 0", "redis.stream_maxlen"),
        (
            "[registry]\nmessage_ring = 100000000000",
            "registry.message_ring",
        ),
        ("[admin]\ntoken = \" \"", "admin.token"),
        (
            "[postgres]\nsslmode = \"verify-full\"\nca_file = \"/nonexistent/ca.pem\"",
            "postgres.ca_file",
        ),
        (
            "[receiver]\nurl = \"wss://user:hunter2@www.deribit.com/ws/api/v2\"",
            "receiver.url",
        ),
    ];
    for (text, key) in cases {
        let config = write_config(dir.path(), text);
        let output = Command::new(KEEL)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn a_million_malformed_frames_make_a_bounded_log() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::create());
    let prefix = TestPrefix::new();
    let (sim, admin) = (closed_port(), closed_port());
    let config = write_config(
        dir.path(),
        &format!(
            "[sim]\nin_daemon = true\nlisten = \"127.0.0.1:{sim}\"\n\
             [receiver]\nurl = \"ws://127.0.0.1:{sim}/ws/api/v2\"\n\
             [backfill]\nhttp_url = \"http://127.0.0.1:{sim}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[schedule]\nenabled = false\n\
             [postgres]\nurl = \"{}\"\n[redis]\nkey_prefix = \"{}\"\n",
            db.url(PG_PORT),
            prefix.prefix
        ),
    );
    let (mut child, lines) = spawn_keel(&["run"], &config);
    wait_for_line(&lines, "Keel is running.", Duration::from_secs(30));
    let client = reqwest::Client::new();
    let receiver = |client: &reqwest::Client| {
        let url = format!("http://127.0.0.1:{admin}/api/actors/receiver");
        let client = client.clone();
        async move {
            let body = client.get(url).send().await.ok()?.text().await.ok()?;
            let actor: serde_json::Value = serde_json::from_str(&body).ok()?;
            Some(actor["details"]["receiver"].clone())
        }
    };
    let streaming = |d: &serde_json::Value| d["trades"].as_u64().is_some_and(|n| n > 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rt
        .block_on(receiver(&client))
        .is_some_and(|d| streaming(&d))
    {
        assert!(Instant::now() < deadline, "the receiver never streamed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: Vec<String> = lines.try_iter().collect();
    let fault = client
        .post(format!("http://127.0.0.1:{sim}/sim/faults"))
        .header("content-type", "application/json")
        .body(r#"{"fault":"malformed","count":1000000}"#)
        .send();
    assert!(rt.block_on(fault).unwrap().status().is_success());
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let malformed = rt
            .block_on(receiver(&client))
            .and_then(|d| d["malformed_frames"].as_u64())
            .unwrap_or(0);
        if malformed >= 1_000_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {malformed} malformed frames arrived"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    signal(&child, "TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)).code(),
        Some(0)
    );
    let after: Vec<String> = lines.try_iter().collect();
    let logged = after
        .iter()
        .filter(|l| l.contains("Malformed frame"))
        .count();
    // The limiter lets 10 a minute through per site, each with the count of
    // what it suppressed; the whole run's log stays small.
    assert!(logged >= 1, "the garbage is reported");
    assert!(logged <= 40, "{logged} lines about malformed frames");
    assert!(
        after.len() + before.len() < 400,
        "{} lines in all",
        after.len()
    );
    assert!(
        after.iter().any(|l| l.contains("suppressed")),
        "what was suppressed is counted"
    );
}

#[test]
fn out_of_file_descriptors_the_admin_server_pauses_instead_of_spinning_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::create());
    let prefix = TestPrefix::new();
    let admin = closed_port();
    let config = write_config(
        dir.path(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[schedule]\nenabled = false\n\
             [receiver]\nurl = \"ws://127.0.0.1:{}/ws/api/v2\"\n\
             [postgres]\nurl = \"{}\"\n[redis]\nkey_prefix = \"{}\"\n",
            closed_port(),
            db.url(PG_PORT),
            prefix.prefix
        ),
    );
    // A low descriptor limit, as in a container, and more idle sockets than it.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 96 && exec {KEEL} run --config {}",
            config.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Keel)
        .unwrap();
    let lines = stderr_lines(&mut child);
    // The tree starts first, then the admin endpoint binds.
    wait_for_line(&lines, "Admin endpoint listening.", Duration::from_secs(30));
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap());
    }
    wait_for_line(
        &lines,
        "Admin endpoint cannot accept; pausing.",
        Duration::from_secs(10),
    );
    let before = cpu_time(child.id());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_time(child.id()) - before;
    assert!(used < Duration::from_millis(600), "{used:?} of CPU in 3 s");
    // Once the flood goes away, the endpoint answers again by itself.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = std::net::TcpStream::connect(("127.0.0.1", admin)).and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        if answer.as_ref().is_ok_and(|t| t.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&child, "TERM");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)).code(),
        Some(0)
    );
    let rest: Vec<String> = lines.try_iter().collect();
    let pauses = rest.iter().filter(|l| l.contains("cannot accept")).count();
    assert!(pauses <= 20, "{pauses} lines about failed accepts");
}

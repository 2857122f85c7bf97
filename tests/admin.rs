//! The admin endpoint over real HTTP against a real tree.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use keel::admin::{AdminConfig, AdminServer};
use keel::Runtime;
use keel_core::supervisor::Strategy;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "s3cret-admin-token";

async fn start() -> (Arc<keel::RuntimeHandle>, AdminServer, Live) {
    let journal = Journal::default();
    let (db, _) = test_child(resource, "db", &journal, Behaviour::default());
    let (w, live) = test_child(worker, "w", &journal, Behaviour::default());
    let handle = Arc::new(
        Runtime::new(fast_policy(Strategy::OneForOne))
            .child(db)
            .child(w)
            .start()
            .await
            .unwrap(),
    );
    let admin = serve(&handle).await;
    (handle, admin, live)
}

/// The admin endpoint for `handle` on a free loopback port, with TOKEN.
async fn serve(handle: &Arc<keel::RuntimeHandle>) -> AdminServer {
    admin_endpoint(handle, TOKEN).await
}

async fn call(admin: &AdminServer, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{}{path}", admin.addr());
    let mut request = match method {
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        _ => client.get(url),
    };
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn every_route_needs_the_token_except_healthz() {
    let (handle, admin, _) = start().await;
    assert_eq!(call(&admin, "GET", "/healthz", None).await.0, 200);
    for (method, path) in [
        ("GET", "/readyz"),
        ("GET", "/api/tree"),
        ("GET", "/api/actors/w"),
        ("GET", "/api/actors/w/messages"),
        ("POST", "/api/actors/w/restart"),
        ("POST", "/api/shutdown"),
        ("GET", "/metrics"),
        ("GET", "/api/actors/w/messages/stream"),
        ("GET", "/api/cluster"),
    ] {
        for token in [None, Some("wrong")] {
            let (status, body) = call(&admin, method, path, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert!(body["error"].is_string());
            assert!(!body.to_string().contains(TOKEN));
        }
    }
    assert_eq!(call(&admin, "GET", "/api/tree", Some(TOKEN)).await.0, 200);
    // A tree without cluster mode says so.
    let (status, body) = call(&admin, "GET", "/api/cluster", Some(TOKEN)).await;
    assert_eq!(status, 404);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("cluster mode is off"));
    handle.shutdown().await;
}

#[tokio::test]
async fn the_tree_actors_messages_and_readiness() {
    let (handle, admin, live) = start().await;
    for n in 0..3 {
        live.send(TestMsg::Work(n));
    }
    eventually("handled", WAIT, || {
        handle.tree().actor("w").unwrap().messages_handled == 3
    })
    .await;
    let (status, tree) = call(&admin, "GET", "/api/tree", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let actors = tree["actors"].as_array().unwrap();
    let names: Vec<&str> = actors.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["root", "db", "w"]);
    assert_eq!(actors[0]["children"], serde_json::json!(["db", "w"]));
    assert_eq!(actors[2]["state"], "running");
    assert_eq!(actors[2]["messages_handled"], 3);

    let (status, one) = call(&admin, "GET", "/api/actors/db", Some(TOKEN)).await;
    assert_eq!((status, one["kind"].as_str()), (200, Some("resource")));
    let (status, messages) =
        call(&admin, "GET", "/api/actors/w/messages?limit=2", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let summaries: Vec<&str> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries, ["work item 1", "work item 2"]);
    assert_eq!(call(&admin, "GET", "/readyz", Some(TOKEN)).await.0, 200);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_restart_through_the_api_is_seen_in_the_tree() {
    let (handle, admin, live) = start().await;
    let before = live.id();
    let (status, body) = call(&admin, "POST", "/api/actors/w/restart", Some(TOKEN)).await;
    assert_eq!((status, body["restarted"].as_str()), (200, Some("w")));
    let (_, one) = call(&admin, "GET", "/api/actors/w", Some(TOKEN)).await;
    assert_eq!(one["restarts"], 1);
    assert_eq!(one["state"], "running");
    assert_eq!(one["last_failure"]["reason"], "restarted on request");
    assert_ne!(live.id(), before, "a new incarnation");
    assert_eq!(
        call(&admin, "POST", "/api/actors/nope/restart", Some(TOKEN))
            .await
            .0,
        404
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_change_nothing() {
    let (handle, admin, _) = start().await;
    for (method, path, expected) in [
        ("GET", "/api/actors/nope", 404),
        ("GET", "/api/actors/nope/messages", 404),
        ("GET", "/api/actors/w/messages?limit=zero", 400),
        ("GET", "/api/actors/w/messages?limit=100000", 400),
        ("GET", "/api/actors/w/messages?color=red", 400),
        ("GET", "/no/such/route", 404),
        ("DELETE", "/api/tree", 405),
        ("GET", "/api/shutdown", 405),
    ] {
        let (status, body) = call(&admin, method, path, Some(TOKEN)).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    assert_eq!(handle.tree().actor("w").unwrap().restarts, 0);
    // A shutdown through the API is accepted once, then refused as in progress.
    let (status, _) = call(&admin, "POST", "/api/shutdown", Some(TOKEN)).await;
    assert_eq!(status, 202);
    assert_eq!(
        call(&admin, "POST", "/api/shutdown", Some(TOKEN)).await.0,
        409
    );
    handle.shutdown().await;
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let open = AdminConfig {
        enabled: true,
        listen: "0.0.0.0:9600".parse().unwrap(),
        token: None,
    };
    assert_eq!(open.problems()[0].0, "token");
    let local = AdminConfig::default();
    assert!(local.problems().is_empty());
}

#[tokio::test]
async fn the_message_stream_delivers_messages_as_they_happen() {
    let (handle, admin, live) = start().await;
    live.send(TestMsg::Work(99));
    eventually("before", WAIT, || {
        handle.tree().actor("w").unwrap().messages_handled == 1
    })
    .await;
    let mut response = reqwest::Client::new()
        .get(format!(
            "http://{}/api/actors/w/messages/stream",
            admin.addr()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    for n in 0..3 {
        live.send(TestMsg::Work(n));
    }
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.contains("work item 2") {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events in time");
        seen.push_str(&String::from_utf8_lossy(
            &chunk.unwrap().expect("stream open"),
        ));
    }
    let (a, b) = (
        seen.find("work item 0").unwrap(),
        seen.find("work item 2").unwrap(),
    );
    assert!(a < b, "in order");
    assert!(
        !seen.contains("work item 99"),
        "only what happened after subscribing"
    );
    assert!(seen.contains("event: message"));
    handle.shutdown().await;
}

#[tokio::test]
async fn metrics_follow_the_prometheus_text_format() {
    let (handle, admin, _) = start().await;
    call(&admin, "POST", "/api/actors/w/restart", Some(TOKEN)).await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/metrics", admin.addr()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains("keel_actor_restarts_total{actor=\"w\"} 1"),
        "{text}"
    );
    let m = samples(&text);
    assert_eq!(m["keel_actor_state{actor=\"w\",state=\"running\"}"], 1.0);
    assert_eq!(m["keel_actor_state{actor=\"w\",state=\"failed\"}"], 0.0);
    assert_eq!(m["keel_actor_mailbox_depth{actor=\"w\"}"], 0.0);
    handle.shutdown().await;
}

fn ctl(admin: &AdminServer, token: &str, args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "ctl",
            "--admin-url",
            &format!("http://{}", admin.addr()),
            "--token",
            token,
        ])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_ctl_draws_the_tree_shows_messages_and_restarts() {
    let (handle, admin, live) = start().await;
    live.send(TestMsg::Work(7));
    eventually("handled", WAIT, || {
        handle.tree().actor("w").unwrap().messages_handled == 1
    })
    .await;
    let admin = Arc::new(admin);
    let run = |args: Vec<&'static str>, token: &'static str| {
        let admin = Arc::clone(&admin);
        tokio::task::spawn_blocking(move || ctl(&admin, token, &args))
    };
    let (code, tree) = run(vec!["tree"], TOKEN).await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        tree.lines().collect::<Vec<_>>(),
        [
            "root (supervisor) running",
            "├── db (resource) running",
            "└── w (worker) running"
        ]
    );
    let (code, messages) = run(vec!["messages", "w", "--limit", "5"], TOKEN)
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(messages.contains("Work work item 7"), "{messages}");
    let (code, _) = run(vec!["restart", "w"], TOKEN).await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(handle.tree().actor("w").unwrap().restarts, 1);
    assert_eq!(run(vec!["restart", "nope"], TOKEN).await.unwrap().0, 1);
    // This tree has no scheduler: the daemon answers 409 and ctl says so.
    assert_eq!(run(vec!["run", "janitor"], TOKEN).await.unwrap().0, 1);
    assert_eq!(run(vec!["tree"], "wrong").await.unwrap().0, 77);
    handle.shutdown().await;
    drop(admin);
    // Nothing listens any more.
    let gone = AdminConfig {
        enabled: true,
        listen: "127.0.0.1:9".parse().unwrap(),
        token: None,
    };
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "ctl",
            "--admin-url",
            &format!("http://{}", gone.listen),
            "tree",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(69));
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let (handle, admin, _) = start().await;
    let (status, doc) = call(&admin, "GET", "/api/openapi.json", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    // Generated from the router: exactly the routes it serves.
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, 15, "{:?}", paths.keys().collect::<Vec<_>>());
    // The bodies are typed, with their fields.
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("Readiness", "not_ready"),
        ("ErrorBody", "error"),
        ("Messages", "messages"),
        ("ShuttingDown", "as"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field}: {schemas}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in [
        ("get", "/"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/api/tree"),
        ("get", "/api/actors/{name}"),
        ("get", "/api/actors/{name}/messages"),
        ("get", "/api/actors/{name}/messages/stream"),
        ("post", "/api/actors/{name}/restart"),
        ("post", "/api/tasks/{name}/run"),
        ("post", "/api/shutdown"),
        ("get", "/metrics"),
        ("get", "/api/openapi.json"),
    ] {
        let responses = &paths[path][method]["responses"];
        assert!(responses.is_object(), "{method} {path}");
        // Behind the token, a route says what it answers without one.
        let public = path == "/" || path == "/healthz";
        assert_eq!(responses["401"].is_object(), !public, "{method} {path}");
        // Every documented route answers (with a real name where it takes one).
        let concrete = path.replace("{name}", "w");
        if method == "get" && !concrete.ends_with("/stream") {
            assert_ne!(
                call(&admin, "GET", &concrete, Some(TOKEN)).await.0,
                404,
                "{concrete}"
            );
        }
    }
    handle.shutdown().await;
}

/// `/metrics` as `(series with labels, value)` pairs, checked line by line.
fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut typed = std::collections::BTreeMap::new();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name.starts_with("keel_"), "{name}");
            assert_eq!(
                name.ends_with("_total"),
                kind == "counter",
                "{name} is a {kind}"
            );
            typed.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with("# HELP ") {
            let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains_key(*f)))
                .unwrap_or(name);
            assert!(typed.contains_key(family), "{name} sampled before its TYPE");
            out.insert(
                series.to_owned(),
                value.parse::<f64>().unwrap_or_else(|_| panic!("{line}")),
            );
        }
    }
    out
}

#[tokio::test]
async fn a_running_daemon_exposes_pools_call_latency_errors_lag_and_task_runs() {
    use common::{daemon, db::TestDb, redis::TestPrefix};
    use keel::tree;
    use keel_actors::resource::redis::RedisClient;

    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = daemon::sim(200.0).await;
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.distributor.progress_every = Duration::from_millis(200);
    let handle = Arc::new(Runtime::from_config(&config).start().await.unwrap());
    let admin = serve(&handle).await;
    eventually(
        "trades are stored and the group's progress read",
        WAIT,
        || {
            let tree = handle.tree();
            let Some(d) = tree.actor(tree::DISTRIBUTOR) else {
                return false;
            };
            d.details
                .get("distributor")
                .is_some_and(|s| s["stored"].as_u64() > Some(0))
                && d.details
                    .get("group_progress")
                    .is_some_and(|g| g["streams"].as_object().is_some_and(|s| !s.is_empty()))
        },
    )
    .await;
    // One command error, to be counted by class.
    let redis = RedisClient::new(handle.registry().clone(), tree::REDIS);
    let refused = redis
        .read_group(
            "no-such-group",
            "c",
            &["trades:BTC-PERPETUAL".to_owned()],
            1,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.class(), "command");
    assert_eq!(
        call(&admin, "POST", "/api/tasks/janitor/run", Some(TOKEN))
            .await
            .0,
        202
    );
    eventually("the janitor ran", WAIT, || {
        handle
            .tree()
            .actor(tree::JANITOR)
            .is_some_and(|a| a.details.contains_key("runs"))
    })
    .await;

    // The tree shows the consumer group's lag and pending count per stream.
    let (_, tree_json) = call(&admin, "GET", "/api/tree", Some(TOKEN)).await;
    let distributor = tree_json["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == tree::DISTRIBUTOR)
        .unwrap()
        .clone();
    let progress = &distributor["details"]["group_progress"];
    assert!(progress["pending"].is_u64(), "{progress}");
    assert!(
        progress["streams"]["trades:BTC-PERPETUAL"]["lag"].is_u64(),
        "{progress}"
    );
    assert!(distributor["mailbox_depth"].is_u64());

    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", admin.addr()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = samples(&text);
    let get = |series: &str| {
        *m.get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        get("keel_pool_max_connections{actor=\"pg\"}"),
        f64::from(config.postgres.max_size)
    );
    assert!(get("keel_pool_connections{actor=\"redis\"}") >= 1.0);
    // A gauge of callers waiting right now: present, never negative.
    assert!(get("keel_pool_waiting_callers{actor=\"pg\"}") >= 0.0);
    let inserts =
        get("keel_resource_call_duration_seconds_count{actor=\"pg\",op=\"insert_trades\"}");
    assert!(inserts >= 1.0);
    assert_eq!(
        get("keel_resource_call_duration_seconds_bucket{actor=\"pg\",op=\"insert_trades\",le=\"+Inf\"}"),
        inserts
    );
    assert!(
        get("keel_resource_call_duration_seconds_sum{actor=\"pg\",op=\"insert_trades\"}") > 0.0
    );
    assert!(
        get("keel_resource_call_duration_seconds_count{actor=\"redis\",op=\"xadd_bulk\"}") >= 1.0
    );
    assert_eq!(
        get("keel_resource_call_errors_total{actor=\"redis\",op=\"read_group\",class=\"command\"}"),
        1.0
    );
    assert!(get("keel_consumer_rows_written_total{actor=\"distributor\"}") >= 1.0);
    assert!(m.contains_key("keel_consumer_group_lag_entries{actor=\"distributor\"}"));
    assert!(m.contains_key("keel_consumer_group_pending_entries{actor=\"analyzer\"}"));
    assert_eq!(
        get("keel_task_runs_total{task=\"janitor\",outcome=\"succeeded\"}"),
        1.0,
        "{:?}",
        handle.tree().actor(tree::JANITOR)
    );
    assert_eq!(
        get("keel_task_run_duration_seconds_count{task=\"janitor\"}"),
        1.0
    );
    assert!(m.contains_key("keel_actor_mailbox_depth{actor=\"receiver\"}"));
    assert!(get("keel_receiver_trades_total{actor=\"receiver\"}") >= 1.0);
    let last_data = get("keel_receiver_last_data_timestamp_seconds{actor=\"receiver\"}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 60.0..=now + 1.0).contains(&last_data),
        "{last_data} vs {now}"
    );
    assert!(!text.contains(TOKEN));
    assert_eq!(get("keel_ready"), 1.0, "{:?}", handle.not_ready());
    assert!(get("keel_start_time_seconds") <= now);
    assert!(get("keel_consumer_oldest_pending_age_seconds{actor=\"distributor\"}") >= 0.0);
    // The alert rules and the dashboard watch metrics Keel exports.
    for file in [
        "contrib/prometheus/keel-rules.yml",
        "contrib/grafana/keel.json",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let watched = std::fs::read_to_string(path).unwrap();
        for word in watched.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            // A histogram's series are exported under the family's name.
            let family = word.strip_suffix("_bucket").unwrap_or(word);
            if family.starts_with("keel_") {
                assert!(
                    text.contains(&format!("\n{family}{{"))
                        || text.contains(&format!("\n{family} "))
                        || text.contains(&format!("\n{family}_bucket{{")),
                    "{file} watches {word}, which /metrics does not export"
                );
            }
        }
    }

    // Prometheus's own linter, where it is installed (scripts/up installs it).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut promtool) => {
            use std::io::Write as _;
            promtool
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = promtool.wait_with_output().unwrap();
            assert!(
                out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("promtool is not installed; its check is skipped");
        }
        Err(e) => panic!("promtool: {e}"),
    }
    handle.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn readiness_turns_false_while_redis_is_down_and_back_when_it_returns() {
    use common::redis::{fast_config, PrivateRedis, TestPrefix};
    use keel_actors::resource::redis::{Redis, RedisConfig};
    use keel_core::supervisor::ChildSpec;

    let mut server = PrivateRedis::start();
    let prefix = TestPrefix::on(server.port);
    let config = RedisConfig {
        health_every: Duration::from_millis(100),
        ..fast_config(server.port, &prefix)
    };
    let handle = Arc::new(
        Runtime::new(fast_policy(Strategy::OneForOne))
            .child(ChildSpec::resource("redis", move |ctx| {
                Redis::spawn(config.clone(), ctx)
            }))
            .start()
            .await
            .unwrap(),
    );
    let admin = serve(&handle).await;
    // The /readyz body once it answers `status`.
    let readyz = |status: u16| {
        let admin = &admin;
        move || async move {
            let (got, body) = call(admin, "GET", "/readyz", Some(TOKEN)).await;
            (got == status).then_some(body)
        }
    };
    eventually_some("ready", WAIT, readyz(200)).await;

    // Nothing calls Redis here: the health check alone notices it is gone.
    server.stop();
    let body = eventually_some("not ready with Redis gone", WAIT, readyz(503)).await;
    assert_eq!(body["ready"], false);
    // The status, and what the server (here: the OS) said.
    let reason = body["not_ready"]["redis"].as_str().unwrap_or_default();
    assert!(reason.starts_with("connecting: "), "{body}");
    assert!(reason.contains("refused"), "{body}");

    server.resume();
    eventually_some("ready again", WAIT, readyz(200)).await;
    handle.shutdown().await;
}

/// The value of one `/metrics` sample line, e.g. `name{reason="streams"}`.
async fn metric(admin: &AdminServer, sample: &str) -> f64 {
    let (_, body) = call(admin, "GET", "/metrics", Some(TOKEN)).await;
    let text = body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sample} not in /metrics"))
}

/// Twenty `/healthz` probes in a row, each answered 200 within 2 s.
async fn healthz_answers_20_times(client: &reqwest::Client, url: &str, while_: &str) {
    for _ in 0..20 {
        let answered = client
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(answered.ok(), Some(200), "/healthz {while_}");
    }
}

#[tokio::test]
async fn idle_sockets_and_a_flood_of_live_tails_leave_healthz_answering() {
    use tokio::io::AsyncReadExt;
    let (handle, admin, _) = start().await;
    let addr = admin.addr();

    // 500 sockets that never send a byte. Over the connection cap, each new one
    // pushes out the oldest that has not sent a request; the rest are closed when
    // their header-read time is up. Meanwhile /healthz answers at once.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let healthz = format!("http://{addr}/healthz");
    let client = reqwest::Client::new();
    healthz_answers_20_times(&client, &healthz, "with idle sockets held").await;
    for mut socket in idle {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
            .await
            .expect("every idle socket is closed")
            .ok();
    }
    assert!(metric(&admin, "keel_admin_refused_total{reason=\"evicted\"}").await >= 244.0);

    // Sockets that reconnect as soon as they are closed cannot keep it out either.
    let flood_stop = tokio_util::sync::CancellationToken::new();
    let flood = {
        let stop = flood_stop.clone();
        tokio::spawn(async move {
            let mut held = std::collections::VecDeque::new();
            while !stop.is_cancelled() {
                if let Ok(socket) = tokio::net::TcpStream::connect(addr).await {
                    held.push_back(socket);
                }
                if held.len() > 300 {
                    held.pop_front();
                }
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await; // let the flood build up
    healthz_answers_20_times(&client, &healthz, "under a reconnecting flood").await;
    flood_stop.cancel();
    flood.await.unwrap();

    // 500 live tails, in waves of 100 opened at once: the first few stream, the
    // rest get a JSON 503. (500 sockets opened at the same instant would exceed
    // the connection slots before they sent their requests, and the oldest
    // silent one is evicted by design: that is the flood case above.)
    let url = format!("http://{addr}/api/actors/w/messages/stream");
    let mut tails = Vec::new();
    for _ in 0..5 {
        tails.extend(
            futures::future::join_all((0..100).map(|_| {
                client
                    .get(&url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .send()
            }))
            .await,
        );
    }
    let mut streaming = Vec::new();
    let mut over = 0;
    for tail in tails {
        let tail = tail.unwrap();
        match tail.status().as_u16() {
            200 => streaming.push(tail),
            503 => {
                let body: Value =
                    serde_json::from_str(&tail.text().await.unwrap()).expect("a JSON error");
                assert!(body["error"].is_string(), "{body}");
                over += 1;
            }
            other => panic!("a tail got {other}"),
        }
    }
    assert_eq!(streaming.len(), keel::admin::MAX_STREAMS);
    assert_eq!(over, 500 - keel::admin::MAX_STREAMS);
    // With every tail slot taken, the endpoint still answers.
    let (status, _) = call(&admin, "GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&admin, "GET", "/api/tree", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&admin, "keel_admin_refused_total{reason=\"streams\"}").await,
        (500 - keel::admin::MAX_STREAMS) as f64
    );
    drop(streaming);
    drop(admin);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_path_that_is_not_utf8_gets_a_json_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (handle, admin, _) = start().await;
    let mut socket = tokio::net::TcpStream::connect(admin.addr()).await.unwrap();
    socket
        .write_all(b"GET /api/actors/%FF%FE HTTP/1.1\r\nhost: x\r\nauthorization: Bearer s3cret-admin-token\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    drop(admin);
    handle.shutdown().await;
}

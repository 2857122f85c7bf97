//! The dashboard in a real browser (headless Chromium) against a real daemon.
//! Skipped, saying so, where Chromium is not installed; `scripts/up` installs it.
//!
//! `KEEL_DASHBOARD_SCREENSHOT=docs/dashboard.png cargo test --test dashboard`
//! also saves the screenshot the README shows.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::browser::Browser;
use common::daemon;
use common::db::TestDb;
use common::redis::TestPrefix;
use common::*;
use keel::admin::AdminServer;
use keel::{tree, Runtime, RuntimeHandle};
use keel_core::supervisor::Strategy;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "dashboard-test-token";

async fn admin(handle: &Arc<RuntimeHandle>) -> AdminServer {
    admin_endpoint(handle, TOKEN).await
}

const ROW_NAMES: &str =
    "[...document.querySelectorAll('#tree tbody tr')].map(r => r.dataset.actor)";

fn cell(actor: &str, class: &str) -> String {
    format!(
        "(document.querySelector('#tree tbody tr[data-actor=\"{actor}\"] td.{class}') || {{}}).textContent"
    )
}

fn click_row(actor: &str) -> String {
    format!("document.querySelector('#tree tbody tr[data-actor=\"{actor}\"]').click()")
}

#[tokio::test]
async fn the_dashboard_shows_the_running_tree_follows_messages_and_restarts_and_stops_it() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = daemon::sim(200.0).await;
    let config = daemon::config(&db, &prefix, Some(&sim));
    let handle = Arc::new(Runtime::from_config(&config).start().await.unwrap());
    let admin = admin(&handle).await;
    eventually("trades are stored", WAIT, || {
        handle
            .tree()
            .actor(tree::DISTRIBUTOR)
            .and_then(|a| a.details.get("distributor").cloned())
            .is_some_and(|d| d["stored"].as_u64() > Some(0))
    })
    .await;

    // The page alone carries no data and needs no token.
    let page = reqwest::get(format!("http://{}/", admin.addr()))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    assert!(!html.contains(&prefix.prefix) && !html.contains(TOKEN));

    let Some(mut browser) = Browser::open(&format!("http://{}/#token={TOKEN}", admin.addr())).await
    else {
        return;
    };
    // Every actor of the running tree is shown.
    let expected: BTreeSet<String> = handle.tree().actors.into_iter().map(|a| a.name).collect();
    assert!(expected.len() >= 6, "{expected:?}");
    browser
        .until("every actor is listed", WAIT, ROW_NAMES, |v| {
            let shown: BTreeSet<String> = serde_json::from_value(v.clone()).unwrap_or_default();
            shown == expected
        })
        .await;
    browser
        .until(
            "the ready badge",
            WAIT,
            "document.getElementById('ready').textContent",
            |v| v == "ready",
        )
        .await;
    assert_eq!(browser.eval(&cell(tree::PG, "state")).await, "running");
    browser
        .until(
            "the consumer's lag and pending count",
            WAIT,
            &cell(tree::DISTRIBUTOR, "status"),
            |v| {
                v.as_str()
                    .is_some_and(|s| s.contains("lag ") && s.contains("pending "))
            },
        )
        .await;
    browser
        .until(
            "the breaker state",
            WAIT,
            &cell(tree::REDIS, "status"),
            |v| v.as_str().is_some_and(|s| s.contains("breaker closed")),
        )
        .await;

    // Clicking an actor shows its details and follows its messages live.
    browser.eval(&click_row(tree::PG)).await;
    let last_seq =
        "[...document.querySelectorAll('#d-messages li')].map(li => +li.dataset.seq).pop() || 0";
    let first = browser
        .until("recent messages", WAIT, last_seq, |v| v.as_u64() > Some(0))
        .await
        .as_u64()
        .unwrap();
    browser
        .until(
            "the live tail",
            WAIT,
            "document.getElementById('d-live').textContent",
            |v| v.as_str().is_some_and(|s| s.contains("live")),
        )
        .await;
    browser
        .until("new messages arrive", WAIT, last_seq, |v| {
            v.as_u64() > Some(first)
        })
        .await;
    let details = browser
        .eval("document.getElementById('d-json').textContent")
        .await;
    assert!(details.as_str().unwrap().contains("\"pool\""), "{details}");

    // A restart from the page is done and shown.
    browser.eval(&click_row(tree::ANALYZER)).await;
    browser
        .eval("document.getElementById('d-restart').click()")
        .await;
    browser
        .until(
            "the restart is shown",
            WAIT,
            &cell(tree::ANALYZER, "restarts"),
            |v| v == "1",
        )
        .await;
    assert_eq!(handle.tree().actor(tree::ANALYZER).unwrap().restarts, 1);
    browser
        .until(
            "the analyzer runs again",
            WAIT,
            &cell(tree::ANALYZER, "state"),
            |v| v == "running",
        )
        .await;

    if let Some(path) = std::env::var_os("KEEL_DASHBOARD_SCREENSHOT") {
        browser.eval(&click_row(tree::REDIS)).await;
        browser
            .until("redis messages", WAIT, last_seq, |v| v.as_u64() > Some(0))
            .await;
        browser.screenshot(std::path::Path::new(&path)).await;
    }

    // Without the token the page says so instead of showing stale data.
    browser
        .eval("sessionStorage.clear(); document.getElementById('token').value = ''")
        .await;
    browser
        .until(
            "the token is asked for",
            WAIT,
            "document.getElementById('banner').textContent",
            |v| v.as_str().is_some_and(|s| s.contains("token")),
        )
        .await;

    // Shutdown takes two clicks, with the token.
    browser
        .eval(&format!(
            "sessionStorage.setItem('keel-admin-token', '{TOKEN}'); document.getElementById('shutdown').click()"
        ))
        .await;
    let requested = admin.shutdown_requested.notified();
    tokio::pin!(requested);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut requested)
            .await
            .is_err(),
        "one click does not shut down"
    );
    browser
        .eval("document.getElementById('shutdown').click()")
        .await;
    tokio::time::timeout(WAIT, requested)
        .await
        .expect("the second click asks for a shutdown");
    browser
        .until(
            "the page says so",
            WAIT,
            "document.getElementById('shutdown').textContent",
            |v| v.as_str().is_some_and(|s| s.starts_with("Shutting down")),
        )
        .await;
    handle.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn the_dashboard_stays_usable_with_hundreds_of_actors() {
    const WORKERS: usize = 300;
    let journal = Journal::default();
    let mut runtime = Runtime::new(fast_policy(Strategy::OneForOne));
    for n in 0..WORKERS {
        let (spec, _) = test_child(worker, &format!("w-{n:03}"), &journal, Behaviour::default());
        runtime = runtime.child(spec);
    }
    let handle = Arc::new(runtime.start().await.unwrap());
    let admin = admin(&handle).await;
    let Some(mut browser) = Browser::open(&format!("http://{}/#token={TOKEN}", admin.addr())).await
    else {
        return;
    };
    browser
        .until(
            "every actor is listed",
            WAIT,
            &format!("{ROW_NAMES}.length"),
            |v| v.as_u64() == Some(WORKERS as u64 + 1),
        )
        .await;
    let summary = browser
        .eval("document.getElementById('summary').textContent")
        .await;
    assert!(
        summary
            .as_str()
            .unwrap()
            .starts_with(&format!("{} actors", WORKERS + 1)),
        "{summary}"
    );
    // The filter narrows the list to what the operator types.
    let visible = "[...document.querySelectorAll('#tree tbody tr')].filter(r => !r.hidden).map(r => r.dataset.actor)";
    browser
        .eval("const f = document.getElementById('filter'); f.value = 'w-29'; f.dispatchEvent(new Event('input'))")
        .await;
    let shown: Vec<String> = serde_json::from_value(
        browser
            .until("the filter applies", WAIT, visible, |v| {
                v.as_array().is_some_and(|a| a.len() == 10)
            })
            .await,
    )
    .unwrap();
    assert!(shown.iter().all(|n| n.starts_with("w-29")), "{shown:?}");
    // A restart deep in the list is reflected there.
    handle.restart("w-287").await.unwrap();
    browser
        .until(
            "the restart is shown",
            WAIT,
            &cell("w-287", "restarts"),
            |v| v == "1",
        )
        .await;
    handle.shutdown().await;
}

/// The executor's row: its session and counters while it trades; `HALTED`,
/// marked as needing attention and kept by the "problems only" filter, while
/// the kill switch is on; back to its session once resumed.
#[tokio::test]
async fn the_dashboard_shows_the_executor_trading_and_halted() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = daemon::sim(0.0).await;
    let config = executor::executor_only(daemon::config(&db, &prefix, Some(&sim)), &sim);
    let handle = Arc::new(Runtime::from_config(&config).start().await.unwrap());
    let admin = admin(&handle).await;
    let mut ws = executor::exchange(&sim).await;
    let low = executor::best(&mut ws).await.0 - 1000.0;
    executor::xadd(
        &mut prefix.connection(),
        &format!("{}orders:intents", prefix.prefix),
        &executor::place("d-1", "buy", 10.0, low, "good_til_cancelled"),
    );
    let Some(mut browser) = Browser::open(&format!("http://{}/#token={TOKEN}", admin.addr())).await
    else {
        handle.shutdown().await;
        return;
    };
    let status = cell(tree::EXECUTOR, "status");
    let bad = format!(
        "document.querySelector('#tree tbody tr[data-actor=\"{}\"] td.status').classList.contains('bad')",
        tree::EXECUTOR
    );
    browser
        .until("the order open and sent", WAIT, &status, |v| {
            v.as_str()
                .is_some_and(|s| s.contains("1 open · 1 sent") && !s.contains("HALTED"))
        })
        .await;
    assert_eq!(browser.eval(&bad).await, false);

    let http = reqwest::Client::new();
    let post = |path: &str| {
        http.post(format!("http://{}{path}", admin.addr()))
            .bearer_auth(TOKEN)
            .send()
    };
    assert!(post("/api/executor/halt")
        .await
        .unwrap()
        .status()
        .is_success());
    browser
        .until("HALTED, the order cancelled", WAIT, &status, |v| {
            v.as_str()
                .is_some_and(|s| s.starts_with("HALTED") && s.contains("0 open"))
        })
        .await;
    assert_eq!(browser.eval(&bad).await, true);
    let visible = "[...document.querySelectorAll('#tree tbody tr')].filter(r => !r.hidden).map(r => r.dataset.actor)";
    browser
        .eval("const p = document.getElementById('problems'); p.checked = true; p.dispatchEvent(new Event('change'))")
        .await;
    let shown = browser
        .until("only the problem is listed", WAIT, visible, |v| {
            v.as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert_eq!(shown, serde_json::json!([tree::EXECUTOR]));

    assert!(post("/api/executor/resume")
        .await
        .unwrap()
        .status()
        .is_success());
    browser
        .until("trading again", WAIT, &status, |v| {
            v.as_str().is_some_and(|s| !s.contains("HALTED"))
        })
        .await;
    assert_eq!(browser.eval(&bad).await, false);
    handle.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_shows_the_cluster_and_the_leases_each_service_holds() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = daemon::sim(20.0).await;
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.cluster.enabled = true;
    config.cluster.instance = "dash-1".into();
    config.schedule.enabled = false;
    let handle = Arc::new(Runtime::from_config(&config).start().await.unwrap());
    let admin = admin(&handle).await;
    let Some(mut browser) = Browser::open(&format!("http://{}/#token={TOKEN}", admin.addr())).await
    else {
        handle.shutdown().await;
        return;
    };
    browser
        .until(
            "one live member holding both leases",
            WAIT,
            &cell(tree::CLUSTER, "status"),
            |v| {
                v.as_str()
                    .is_some_and(|s| s.contains("1 live · 0 silent · holds 2 leases"))
            },
        )
        .await;
    for service in [tree::RECEIVER, tree::ANALYZER] {
        browser
            .until(
                "the service's leases",
                WAIT,
                &cell(service, "status"),
                |v| {
                    v.as_str()
                        .is_some_and(|s| s.contains("leases BTC-PERPETUAL"))
                },
            )
            .await;
    }
    handle.shutdown().await;
    sim.stop().await;
}

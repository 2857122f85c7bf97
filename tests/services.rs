//! Service behaviours the conservation test does not single out: dead letters,
//! book resynchronisation, refused subscriptions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db::{TestDb, PG_PORT};
use common::proxy::{Mode, TcpProxy};
use common::redis::TestPrefix;
use common::{daemon, eventually, eventually_some};
use keel::{tree, Runtime, RuntimeHandle};
use keel_actors::resource::redis::{Fields, RedisClient};
use keel_actors::service::streams;
use keel_deribit::model::PublicTrade;
use keel_deribit::sim::Fault;

const WAIT: Duration = Duration::from_secs(20);

/// `XPENDING key group`: count, smallest id, greatest id, per-consumer counts.
type PendingSummary = (
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, String)>>,
);
/// An `XRANGE` reply entry: id and field/value pairs.
type RangeEntry = (String, Vec<(String, Vec<u8>)>);

fn detail(handle: &RuntimeHandle, actor: &str, key: &str) -> Option<serde_json::Value> {
    handle.tree().actor(actor)?.details.get(key).cloned()
}

#[tokio::test]
async fn entries_that_cannot_be_stored_go_to_the_dead_letter_stream_and_never_block_the_group() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let mut config = daemon::config(&db, &prefix, None);
    config.receiver.enabled = false;
    config.analyzer.enabled = false;
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let redis = RedisClient::new(handle.registry().clone(), tree::REDIS);
    let trade = |seq: i64| {
        PublicTrade::buy(
            "BTC-PERPETUAL",
            seq,
            1_700_000_000_000 + seq as u64,
            100.0,
            1.0,
        )
    };
    let mut sideways = trade(3);
    sideways.direction = "sideways".into();
    let entries: Vec<Fields> = vec![
        streams::encode(&trade(1)).unwrap(),
        vec![("t".into(), b"{not json".to_vec())],
        streams::encode(&trade(2)).unwrap(),
        streams::encode(&sideways).unwrap(),
        vec![("other".into(), b"no trade field".to_vec())],
        streams::encode(&trade(4)).unwrap(),
    ];
    redis
        .xadd_bulk(&streams::trade_stream("BTC-PERPETUAL"), Arc::from(entries))
        .await
        .unwrap();

    let client = db.client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored: i64 = client
            .query_one("SELECT count(*) FROM trades", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if stored == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "good entries were not stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("dead letters counted", WAIT, || {
        detail(&handle, tree::DISTRIBUTOR, "distributor").is_some_and(|d| d["dead_lettered"] == 3)
    })
    .await;
    let mut conn = prefix.connection();
    let dead: Vec<RangeEntry> = redis::cmd("XRANGE")
        .arg(format!("{}{}", prefix.prefix, streams::DEAD_LETTER_STREAM))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    assert_eq!(dead.len(), 3);
    for (_, fields) in &dead {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert!(field("reason").is_some_and(|r| !r.is_empty()));
        assert_eq!(field("stream").as_deref(), Some("trades:BTC-PERPETUAL"));
    }
    let pending: PendingSummary = redis::cmd("XPENDING")
        .arg(format!("{}trades:BTC-PERPETUAL", prefix.prefix))
        .arg("distributor")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        pending.0, 0,
        "everything acknowledged, the bad entries included"
    );
    assert_eq!(
        handle.tree().actor(tree::DISTRIBUTOR).unwrap().restarts,
        0,
        "bad entries never crash it"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_book_gap_resubscribes_that_book_without_a_reconnect() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = daemon::sim(200.0).await;
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.receiver.book = true;
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually("streaming", WAIT, || {
        detail(&handle, tree::RECEIVER, "connection").is_some_and(|c| c == "streaming")
    })
    .await;
    // Let the first book snapshot arrive, then skip a change_id.
    eventually("book flowing", WAIT, || {
        detail(&handle, tree::RECEIVER, "receiver").is_some_and(|r| r["frames"].as_u64() > Some(20))
    })
    .await;
    sim.inject(&Fault::BookGap { instrument: None }).unwrap();
    eventually("book resynchronised", WAIT, || {
        detail(&handle, tree::RECEIVER, "receiver")
            .is_some_and(|r| r["book_resyncs"].as_u64() >= Some(1))
    })
    .await;
    assert_eq!(
        handle.tree().actor(tree::RECEIVER).unwrap().restarts,
        0,
        "only the book was resubscribed"
    );
    handle.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn a_refused_subscription_fails_the_receiver_and_the_supervisor_retries() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = daemon::sim(200.0).await;
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.receiver.instruments = vec!["NOPE-PERPETUAL".into()];
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually("receiver restarted after the refusal", WAIT, || {
        handle.tree().actor(tree::RECEIVER).is_some_and(|a| {
            a.restarts >= 2
                && a.last_failure
                    .as_ref()
                    .is_some_and(|f| f.reason.contains("refused"))
        })
    })
    .await;
    handle.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn missed_heartbeats_fail_the_connection_while_data_still_flows_and_it_reconnects() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = daemon::sim(200.0).await;
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.schedule.enabled = false;
    // Data keeps the stall timer (5 s) from firing: only heartbeats can tell.
    config.receiver.heartbeat = Duration::from_secs(1);
    config.receiver.connect_timeout = Duration::from_secs(1);
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually("streaming", WAIT, || {
        detail(&handle, tree::RECEIVER, "connection").is_some_and(|c| c == "streaming")
    })
    .await;
    // Past the connect grace (connect_timeout + 2 heartbeats), so the deadline
    // is the one heartbeats renew.
    eventually("past the connect grace", WAIT, || {
        handle
            .tree()
            .actor(tree::RECEIVER)
            .and_then(|a| a.uptime)
            .is_some_and(|u| u > Duration::from_secs(4))
    })
    .await;
    sim.inject(&Fault::SilenceHeartbeats { ms: 4_000 }).unwrap();
    eventually("the receiver noticed the missing heartbeats", WAIT, || {
        handle.tree().actor(tree::RECEIVER).is_some_and(|a| {
            a.restarts >= 1
                && a.last_failure
                    .as_ref()
                    .is_some_and(|f| f.reason.contains("missed heartbeats"))
        })
    })
    .await;
    let trades = |handle: &RuntimeHandle| {
        detail(handle, tree::RECEIVER, "receiver").map_or(0, |r| r["trades"].as_u64().unwrap_or(0))
    };
    let after_restart = trades(&handle);
    eventually("trades flow on the new connection", WAIT, || {
        trades(&handle) > after_restart
    })
    .await;
    assert_eq!(sim.stats().faults.get("silence_heartbeats"), Some(&1));
    handle.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn twelve_hundred_channels_are_subscribed_in_frames_the_exchange_reads() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    // 600 instruments, trades and book each: 1,200 channels, about 40 kB in
    // one subscribe, over Deribit's 32 kB frame limit.
    let instruments: Vec<String> = (0..600)
        .map(|i| format!("BTC-25JUN27-{}-C", 100_000 + i * 500))
        .collect();
    let sim = keel_deribit::sim::start(keel_deribit::sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: instruments.clone(),
        trades_per_sec: 500.0,
        client_id: Some("k".into()),
        client_secret: Some(keel_core::secret::Secret::new("s")),
        min_heartbeat: Duration::from_secs(1),
        ..keel_deribit::sim::SimConfig::default()
    })
    .await
    .unwrap();
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.receiver.instruments = instruments;
    config.receiver.book = true;
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually("every subscribe answered", WAIT, || {
        detail(&handle, tree::RECEIVER, "connection").is_some_and(|c| c == "streaming")
    })
    .await;
    eventually("1,200 subscriptions held by the exchange", WAIT, || {
        sim.stats().subscriptions == 1_200
    })
    .await;
    assert_eq!(
        handle.tree().actor(tree::RECEIVER).unwrap().restarts,
        0,
        "no subscribe was refused"
    );
    handle.shutdown().await;
    sim.stop().await;
}

/// `scripts/sim-cert` (what the README tells users to run) in a fresh directory.
fn sim_certificate() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "keel-sim-cert-{}-{}",
        std::process::id(),
        prefix_nonce()
    ));
    let made = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sim-cert"),
    )
    .arg(&dir)
    .output()
    .expect("scripts/sim-cert runs (openssl: scripts/up installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    dir
}

fn prefix_nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[tokio::test]
async fn over_tls_the_receiver_and_the_backfill_trust_the_configured_ca_and_nothing_else() {
    let certs = sim_certificate();
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let sim = keel_deribit::sim::start(keel_deribit::sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        instruments: vec!["BTC-PERPETUAL".into()],
        trades_per_sec: 200.0,
        client_id: Some("k".into()),
        client_secret: Some(keel_core::secret::Secret::new("s")),
        min_heartbeat: Duration::from_secs(1),
        tls_cert: Some(certs.join("cert.pem")),
        tls_key: Some(certs.join("key.pem")),
        ..keel_deribit::sim::SimConfig::default()
    })
    .await
    .unwrap();
    assert!(sim.ws_url().starts_with("wss://"), "{}", sim.ws_url());
    assert!(sim.http_url().starts_with("https://"), "{}", sim.http_url());

    // HTTP, as the backfill and the instruments task call it.
    use keel_deribit::http::HttpClient;
    use keel_deribit::model::VersionResult;
    let ca = certs.join("ca.pem");
    let trusted = HttpClient::new(&sim.http_url(), Duration::from_secs(5), Some(&ca)).unwrap();
    let version: VersionResult = trusted.public("test", &[]).await.unwrap();
    assert!(!version.version.is_empty());
    let untrusted = HttpClient::new(&sim.http_url(), Duration::from_secs(5), None).unwrap();
    let refused = untrusted
        .public::<VersionResult>("test", &[])
        .await
        .expect_err("a certificate from an unknown CA is refused");
    assert!(refused.to_string().contains("unreachable"), "{refused}");

    // The receiver over wss:// with `ca_file`.
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.receiver.ca_file = Some(ca.clone());
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually("trades over wss://", WAIT, || {
        detail(&handle, tree::RECEIVER, "receiver").is_some_and(|r| r["trades"].as_u64() > Some(10))
    })
    .await;
    handle.shutdown().await;

    // Without it, the handshake fails and the receiver says why.
    let prefix = TestPrefix::new();
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    eventually("the receiver reports the certificate", WAIT, || {
        handle.tree().actor(tree::RECEIVER).is_some_and(|a| {
            a.last_failure.as_ref().is_some_and(|f| {
                f.reason.contains("certificate") || f.reason.contains("UnknownIssuer")
            })
        })
    })
    .await;
    handle.shutdown().await;
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&certs);
}

/// The cryptofeed recording of 2021-07-22 (one continuous production session,
/// one file per line in the corpus) joined back into its JSON-lines form, with
/// cryptofeed's `<timestamp>: ` prefix.
fn recorded_session() -> std::path::PathBuf {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deribit-frames/cryptofeed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("ws-"))
        .collect();
    files.sort();
    let lines: Vec<String> = files
        .iter()
        .map(|p| {
            format!(
                "1626966071.0: {}",
                std::fs::read_to_string(p).unwrap().trim()
            )
        })
        .collect();
    let file = std::env::temp_dir().join(format!(
        "keel-replay-{}-{}.jsonl",
        std::process::id(),
        prefix_nonce()
    ));
    std::fs::write(&file, lines.join("\n")).unwrap();
    file
}

#[tokio::test]
async fn the_receiver_follows_the_books_of_a_recorded_real_session() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let file = recorded_session();
    let sim = keel_deribit::sim::start(keel_deribit::sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        replay: Some(file.clone()),
        replay_speed: 10.0,
        min_heartbeat: Duration::from_secs(1),
        ..keel_deribit::sim::SimConfig::default()
    })
    .await
    .unwrap();
    // The recording's ten options, as the exchange listed them then.
    assert_eq!(sim.instruments().len(), 10, "{:?}", sim.instruments());
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.receiver.instruments = sim.instruments().to_vec();
    config.receiver.book = true;
    config.schedule.enabled = false;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    // 10 snapshots and 36 changes of the recorded books (its tickers are not subscribed).
    eventually("every recorded book frame served", WAIT, || {
        sim.stats().notifications >= 46
    })
    .await;
    eventually("and read", WAIT, || {
        detail(&handle, tree::RECEIVER, "receiver")
            .is_some_and(|r| r["frames"].as_u64() >= Some(46))
    })
    .await;
    let stats = detail(&handle, tree::RECEIVER, "receiver").unwrap();
    assert_eq!(
        stats["book_resyncs"], 0,
        "the real book chains are continuous: {stats}"
    );
    assert_eq!(stats["malformed_frames"], 0, "{stats}");
    assert_eq!(stats["unknown_channels"], 0, "{stats}");
    handle.shutdown().await;
    sim.stop().await;
    let _ = std::fs::remove_file(&file);
}

/// The slowest consumer group's backlog on `stream`: delivered and not
/// acknowledged, plus not delivered yet.
async fn backlog(redis: &RedisClient, stream: &str) -> u64 {
    let groups = redis.group_progress(stream).await.unwrap_or_default();
    groups
        .iter()
        .map(|g| g.pending + g.lag.unwrap_or(0))
        .max()
        .unwrap_or(0)
}

/// A distributor that cannot commit (its PostgreSQL cut for 30 s) holds the
/// receiver back at `max_backlog`: the stream never holds more than that the
/// group has not acknowledged (so its MAXLEN trimming can never remove an unread
/// entry), what the receiver's buffer cannot hold is dropped and recorded as
/// gaps, and once the distributor catches up publishing resumes.
#[tokio::test]
async fn a_consumer_far_behind_holds_the_receiver_back_and_what_it_sheds_becomes_gaps() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let proxy = TcpProxy::start(PG_PORT, Mode::Up).await;
    let sim = daemon::sim(2_000.0).await;
    let mut config = daemon::config(&db, &prefix, Some(&sim));
    config.postgres.url = db.url(proxy.port);
    config.analyzer.enabled = false;
    config.schedule.enabled = false;
    // The smallest bounds the configuration allows, so that this load crosses
    // them within seconds (the defaults hold minutes of a normal day's trades).
    config.receiver.max_backlog = 1_000;
    config.receiver.buffer_limit = 2_000;
    let batch = config.receiver.batch_size as u64;
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let redis = RedisClient::new(handle.registry().clone(), tree::REDIS);
    let stream = streams::trade_stream("BTC-PERPETUAL");
    let client = db.client().await;
    let stored = || async {
        client
            .query_one("SELECT count(*) FROM trades", &[])
            .await
            .map_or(0, |r| r.get::<_, i64>(0))
    };
    let receiver =
        |key: &str| detail(&handle, tree::RECEIVER, "receiver").and_then(|r| r.get(key).cloned());
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "trades never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    proxy.set(Mode::Down);
    let outage = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut worst = 0;
    while tokio::time::Instant::now() < outage {
        worst = worst.max(backlog(&redis, &stream).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The bound counts trades, each entry taken as holding the most it may.
    let per_entry = config.receiver.trades_per_entry as u64;
    assert!(
        worst <= config.receiver.max_backlog / per_entry + batch,
        "backlog of {worst} entries went past max_backlog"
    );
    assert!(
        worst * per_entry >= config.receiver.max_backlog,
        "backlog of {worst} entries: never held back"
    );
    assert_eq!(receiver("backlog_full"), Some(true.into()));
    let dropped = receiver("dropped").and_then(|d| d.as_u64()).unwrap_or(0);
    assert!(dropped > 0, "the buffer never shed");

    proxy.set(Mode::Up);
    eventually("publishing resumed", Duration::from_secs(60), || {
        receiver("backlog_full") == Some(false.into())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let row = client
            .query_one(
                "SELECT coalesce(sum(to_seq - from_seq + 1), 0)::bigint FROM trade_gaps",
                &[],
            )
            .await
            .map_or(0, |r| r.get::<_, i64>(0));
        if row as u64 >= dropped {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{row} trades recorded as gaps, {dropped} dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(recorded > 0);
    let before = stored().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored().await < before + 2_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "storing did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown().await;
    sim.stop().await;
}

/// A read whose reply was lost (a timeout after Redis delivered) leaves the
/// entries pending with the consumer itself: it reads them again at its next
/// claim tick (`claim_every`, 10 s), not only when a claim would take them
/// (`claim_min_idle`, 30 s).
#[tokio::test]
async fn entries_delivered_in_a_lost_reply_are_read_again_within_a_claim_tick() {
    let db = TestDb::create().await;
    let prefix = TestPrefix::new();
    let mut config = daemon::config(&db, &prefix, None);
    config.receiver.enabled = false;
    config.analyzer.enabled = false;
    config.schedule.enabled = false;
    config.distributor.consumer = "d".into();
    let handle = Runtime::from_config(&config).start().await.unwrap();
    let mut conn = prefix.connection();
    let key = format!("{}trades:BTC-PERPETUAL", prefix.prefix);
    eventually("the group exists", WAIT, || {
        redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query::<Vec<redis::Value>>(&mut conn)
            .is_ok_and(|g| !g.is_empty())
    })
    .await;
    // Delivered to `d` in the same transaction as written, so the daemon's own
    // blocked read never sees them: as if its reply had been lost.
    let trades: Vec<PublicTrade> = (1..=5)
        .map(|seq| {
            PublicTrade::buy(
                "BTC-PERPETUAL",
                seq,
                1_700_000_000_000 + seq as u64,
                100.0,
                1.0,
            )
        })
        .collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for t in &trades {
        let fields = streams::encode(t).unwrap();
        let cmd = pipe.cmd("XADD").arg(&key).arg("*");
        for (name, value) in fields {
            cmd.arg(name).arg(value);
        }
        cmd.ignore();
    }
    pipe.cmd("XREADGROUP")
        .arg("GROUP")
        .arg("distributor")
        .arg("d")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .ignore();
    let () = pipe.query(&mut conn).unwrap();
    let client = db.client().await;
    let within_a_tick = Duration::from_secs(25);
    eventually_some(
        "stored before a claim would take them (30 s)",
        within_a_tick,
        || {
            let client = &client;
            async move {
                let stored: i64 = client
                    .query_one("SELECT count(*) FROM trades", &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(0);
                (stored == 5).then_some(())
            }
        },
    )
    .await;
    handle.shutdown().await;
}

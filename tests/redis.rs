//! RedisActor against real Redis: the shared server under a key prefix of each
//! test's own, and a private server for the tests that stop it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::{fast_config, PrivateRedis, TestPrefix, REDIS_PORT};
use common::{eventually, fast_policy};
use keel::{Runtime, RuntimeHandle};
use keel_actors::resource::redis::{
    BreakerConfig, Fields, Redis, RedisClient, RedisConfig, RedisError, MAX_READ_BLOCK,
};
use keel_actors::resource::Status;
use keel_core::delay::BackoffConfig;
use keel_core::supervisor::{ChildSpec, Strategy};

const WAIT: Duration = Duration::from_secs(20);

async fn start(config: RedisConfig) -> (RuntimeHandle, RedisClient) {
    let handle = Runtime::new(fast_policy(Strategy::OneForOne))
        .child(ChildSpec::resource("redis", move |ctx| {
            Redis::spawn(config.clone(), ctx)
        }))
        .start()
        .await
        .unwrap();
    let client = RedisClient::new(handle.registry().clone(), "redis");
    (handle, client)
}

fn entries(n: usize) -> Vec<Fields> {
    (0..n)
        .map(|i| {
            vec![
                ("seq".to_owned(), i.to_string().into_bytes()),
                ("payload".to_owned(), format!("trade {i}").into_bytes()),
            ]
        })
        .collect()
}

fn breaker_state(handle: &RuntimeHandle) -> Option<String> {
    let tree = handle.tree();
    let details = &tree.actor("redis")?.details;
    details
        .get("breaker")?
        .get("state")?
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn streams_and_consumer_groups_round_trip() {
    let prefix = TestPrefix::new();
    let (handle, redis) = start(fast_config(REDIS_PORT, &prefix)).await;

    assert!(redis.create_group("trades", "distributor").await.unwrap());
    assert!(
        !redis.create_group("trades", "distributor").await.unwrap(),
        "idempotent"
    );

    let batch: Arc<[Fields]> = entries(100).into();
    let kept = batch.to_vec();
    let ids = redis.xadd_bulk("trades", Arc::clone(&batch)).await.unwrap();
    assert_eq!(ids.len(), 100);
    assert_eq!(&*batch, &kept[..], "input left unchanged");

    let streams = vec!["trades".to_owned()];
    let read = redis
        .read_group("distributor", "c1", &streams, 1000)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].0, "trades",
        "stream names come back without the prefix"
    );
    let got = &read[0].1;
    assert_eq!(got.len(), 100);
    assert_eq!(got[7].id, ids[7]);
    assert_eq!(got[7].fields, kept[7], "fields in the order written");

    let acked = redis
        .ack(
            "trades",
            "distributor",
            got.iter().map(|e| e.id.clone()).collect(),
        )
        .await
        .unwrap();
    assert_eq!(acked, 100);
    // Nothing new, nothing pending.
    let again = redis
        .read_group("distributor", "c1", &streams, 1000)
        .await
        .unwrap();
    assert!(again.iter().all(|(_, e)| e.is_empty()));

    // The keys really live under the prefix.
    let mut conn = prefix.connection();
    let len: u64 = redis::cmd("XLEN")
        .arg(format!("{}trades", prefix.prefix))
        .query(&mut conn)
        .unwrap();
    assert_eq!(len, 100);
    handle.shutdown().await;
}

#[tokio::test]
async fn writes_trim_streams_to_about_maxlen_and_trim_min_id_drops_older_entries() {
    let prefix = TestPrefix::new();
    let mut config = fast_config(REDIS_PORT, &prefix);
    config.stream_maxlen = 100;
    let (handle, redis) = start(config).await;
    for _ in 0..10 {
        redis.xadd_bulk("s", entries(100).into()).await.unwrap();
    }
    let mut conn = prefix.connection();
    let key = format!("{}s", prefix.prefix);
    let len: u64 = redis::cmd("XLEN").arg(&key).query(&mut conn).unwrap();
    assert!((100..1000).contains(&len), "approximately trimmed: {len}");

    let ids = redis.xadd_bulk("t", entries(10).into()).await.unwrap();
    assert_eq!(redis.trim_min_id("t", &ids[4]).await.unwrap(), 4);
    let left: u64 = redis::cmd("XLEN")
        .arg(format!("{}t", prefix.prefix))
        .query(&mut conn)
        .unwrap();
    assert_eq!(left, 6);
    handle.shutdown().await;
}

#[tokio::test]
async fn pending_entries_are_reclaimed_by_another_consumer_after_one_dies() {
    let prefix = TestPrefix::new();
    let (handle, redis) = start(fast_config(REDIS_PORT, &prefix)).await;
    redis.create_group("s", "g").await.unwrap();
    redis.xadd_bulk("s", entries(10).into()).await.unwrap();
    let streams = vec!["s".to_owned()];
    // Consumer "dead" reads and never acknowledges.
    let taken = redis.read_group("g", "dead", &streams, 100).await.unwrap();
    assert_eq!(taken[0].1.len(), 10);

    let min_idle = Duration::from_millis(50);
    // Not idle long enough yet: nothing to claim.
    let early = redis
        .autoclaim("s", "g", "alive", Duration::from_secs(60), "0-0", 100)
        .await
        .unwrap();
    assert!(early.entries.is_empty());

    let mut claimed = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while claimed.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "entries never became claimable"
        );
        claimed = redis
            .autoclaim("s", "g", "alive", min_idle, "0-0", 100)
            .await
            .unwrap()
            .entries;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(claimed.len(), 10);
    assert!(
        claimed.iter().all(|d| d.deliveries == 2),
        "read once, claimed once: {claimed:?}"
    );
    assert_eq!(claimed[3].entry.field("seq"), Some(&b"3"[..]));

    let ids = claimed.iter().map(|d| d.entry.id.clone()).collect();
    assert_eq!(redis.ack("s", "g", ids).await.unwrap(), 10);
    let after = redis
        .autoclaim("s", "g", "alive", Duration::ZERO, "0-0", 100)
        .await
        .unwrap();
    assert!(after.entries.is_empty(), "nothing left pending");
    handle.shutdown().await;
}

#[tokio::test]
async fn command_errors_return_to_the_caller_and_never_trip_the_breaker() {
    let prefix = TestPrefix::new();
    let (handle, redis) = start(fast_config(REDIS_PORT, &prefix)).await;
    assert!(redis
        .lease_acquire("plain", "me", Duration::from_secs(60))
        .await
        .unwrap());
    let streams = vec!["nostream".to_owned()];
    for _ in 0..20 {
        let err = redis
            .read_group("nogroup", "c", &streams, 1)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("NOGROUP"), "{err}");
        let err = redis
            .xadd_bulk("plain", entries(1).into())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("WRONGTYPE"), "{err}");
    }
    let health = redis.health().await.unwrap();
    assert_eq!(health.details["breaker"]["state"], "closed");
    assert_eq!(health.details["breaker"]["transitions"], 0);
    assert_eq!(health.status, Status::Ready);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_blocking_read_at_the_longest_allowed_block_returns_empty_not_a_timeout() {
    let prefix = TestPrefix::new();
    let mut config = fast_config(REDIS_PORT, &prefix);
    config.read_block = MAX_READ_BLOCK;
    let (handle, redis) = start(config).await;
    redis.create_group("quiet", "g").await.unwrap();
    let started = std::time::Instant::now();
    let read = redis
        .read_group("g", "c", &["quiet".to_owned()], 10)
        .await
        .expect("a full block returns before the client's reply timeout");
    assert!(read.iter().all(|(_, e)| e.is_empty()));
    assert!(
        started.elapsed() >= MAX_READ_BLOCK,
        "the read really blocked"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn leases_belong_to_one_owner_at_a_time() {
    let prefix = TestPrefix::new();
    let (handle, redis) = start(fast_config(REDIS_PORT, &prefix)).await;
    let ttl = Duration::from_secs(30);
    assert!(redis.lease_acquire("janitor", "a", ttl).await.unwrap());
    assert!(!redis.lease_acquire("janitor", "b", ttl).await.unwrap());
    assert!(redis.lease_renew("janitor", "a", ttl).await.unwrap());
    assert!(!redis.lease_renew("janitor", "b", ttl).await.unwrap());
    assert!(!redis.lease_release("janitor", "b").await.unwrap());
    assert!(redis.lease_release("janitor", "a").await.unwrap());
    assert!(redis.lease_acquire("janitor", "b", ttl).await.unwrap());
    handle.shutdown().await;
}

#[tokio::test]
async fn a_receiver_lease_hands_out_growing_tokens_and_fences_every_write_of_a_former_holder() {
    let prefix = TestPrefix::new();
    let (handle, redis) = start(fast_config(REDIS_PORT, &prefix)).await;
    let ttl = Duration::from_millis(300);
    let lease = "cluster:lease:receiver:X";
    let first = redis.take_lease("receiver", "X", "a", ttl).await.unwrap();
    assert_eq!(first, Some(1));
    assert_eq!(
        redis.take_lease("receiver", "X", "b", ttl).await.unwrap(),
        None
    );
    let written = redis
        .xadd_fenced("s", entries(3).into(), 1, lease, "a:1")
        .await
        .unwrap();
    assert_eq!(written, Some(3));
    // a pauses past its TTL; b takes the lease with a higher token.
    let taken = common::eventually_some("the lease expires", WAIT, || {
        let redis = redis.clone();
        async move { redis.take_lease("receiver", "X", "b", ttl).await.unwrap() }
    })
    .await;
    assert_eq!(taken, 2);
    // a's late write goes nowhere, b's goes in.
    let late = redis
        .xadd_fenced("s", entries(2).into(), 1, lease, "a:1")
        .await
        .unwrap();
    assert_eq!(late, None);
    let stream = redis.last_entry("s").await.unwrap().unwrap();
    assert_eq!(
        stream.field("seq"),
        Some(&b"2"[..]),
        "nothing of a's after the handover"
    );
    assert_eq!(
        stream.field("k"),
        Some(&b"1"[..]),
        "each entry names its token"
    );
    let current = redis
        .xadd_fenced("s", entries(2).into(), 1, lease, "b:2")
        .await
        .unwrap();
    assert_eq!(current, Some(2));
    let stream = redis.last_entry("s").await.unwrap().unwrap();
    assert_eq!(stream.field("k"), Some(&b"2"[..]));
    // A former holder cannot renew or release what is b's now.
    assert!(!redis.lease_renew(lease, "a:1", ttl).await.unwrap());
    assert!(!redis.lease_release(lease, "a:1").await.unwrap());
    assert!(redis.lease_release(lease, "b:2").await.unwrap());
    handle.shutdown().await;
}

#[tokio::test]
async fn a_consumer_that_left_is_forgotten_only_with_nothing_pending() {
    let prefix = TestPrefix::new();
    let (handle, redis) = start(fast_config(REDIS_PORT, &prefix)).await;
    redis.create_group("s", "g").await.unwrap();
    redis.xadd_bulk("s", entries(2).into()).await.unwrap();
    let read = redis
        .read_group("g", "holding", &["s".to_owned()], 1)
        .await
        .unwrap();
    assert_eq!(read[0].1.len(), 1);
    redis
        .read_group("g", "empty", &["s".to_owned()], 1)
        .await
        .unwrap();
    let ids: Vec<String> = redis
        .read_own_pending("g", "empty", &["s".to_owned()], 10)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|(_, e)| e.into_iter().map(|d| d.entry.id))
        .collect();
    redis.ack("s", "g", ids).await.unwrap();
    redis.forget_consumer("s", "g", "holding").await.unwrap();
    redis.forget_consumer("s", "g", "empty").await.unwrap();
    let mut conn = prefix.connection();
    let consumers: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(format!("{}s", prefix.prefix))
        .arg("g")
        .query(&mut conn)
        .unwrap();
    let names: Vec<String> = consumers
        .iter()
        .filter_map(|c| redis::from_redis_value(c.get("name")?.clone()).ok())
        .collect();
    assert_eq!(names, ["holding"], "what a consumer holds is never dropped");
    handle.shutdown().await;
}

#[tokio::test]
async fn the_breaker_opens_when_redis_stops_fails_fast_and_closes_when_it_returns() {
    let mut server = PrivateRedis::start();
    let prefix = TestPrefix::on(server.port);
    let mut config = fast_config(server.port, &prefix);
    config.breaker = BreakerConfig {
        consecutive_failures: 3,
        open_for: BackoffConfig {
            min: Duration::from_millis(200),
            max: Duration::from_millis(400),
            multiplier: 2.0,
            jitter: 0.0,
        },
        ..BreakerConfig::default()
    };
    let (handle, redis) = start(config).await;
    redis.ping().await.unwrap();
    assert_eq!(breaker_state(&handle).as_deref(), Some("closed"));

    server.stop();
    // Connection-class failures until the breaker opens.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match redis.ping().await {
            Err(RedisError::CircuitOpen { .. }) => break,
            Err(RedisError::Connection { .. }) => {}
            other => panic!("unexpected while Redis is down: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker never opened"
        );
    }
    assert_eq!(breaker_state(&handle).as_deref(), Some("open"));
    let health = redis.health().await.unwrap();
    assert_eq!(
        health.status,
        Status::Connecting,
        "the registry shows Redis as lost"
    );

    // While open, calls fail without touching the network: no pool checkout at all.
    let checkouts = health.details["checkouts"].as_u64().unwrap();
    let mut refused = 0;
    for _ in 0..50 {
        if let Err(RedisError::CircuitOpen { .. }) = redis.xadd_bulk("s", entries(1).into()).await {
            refused += 1;
        }
    }
    let after = redis.health().await.unwrap();
    if refused == 50 {
        assert_eq!(after.details["checkouts"].as_u64().unwrap(), checkouts);
    } else {
        // The open interval ended mid-loop: exactly one probe may have gone out.
        assert!(after.details["checkouts"].as_u64().unwrap() <= checkouts + 1);
    }
    assert!(after.details["breaker"]["rejected"].as_u64().unwrap() >= 49);

    server.resume();
    eventually_ok(&redis).await;
    eventually("breaker closed", WAIT, || {
        breaker_state(&handle).as_deref() == Some("closed")
    })
    .await;
    let breaker = redis.health().await.unwrap().details["breaker"].clone();
    assert!(
        breaker["transitions"].as_u64().unwrap() >= 3,
        "closed->open->half_open->closed: {breaker}"
    );
    assert_eq!(redis.health().await.unwrap().status, Status::Ready);
    handle.shutdown().await;
}

async fn eventually_ok(redis: &RedisClient) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while redis.ping().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn it_starts_while_redis_is_down_and_becomes_ready_when_it_is_up() {
    let mut server = PrivateRedis::start();
    server.stop();
    let prefix = TestPrefix::on(server.port);
    let (handle, redis) = start(fast_config(server.port, &prefix)).await;
    let status = |h: &RuntimeHandle| {
        h.tree()
            .actor("redis")
            .and_then(|a| a.details.get("status").cloned())
    };
    assert_eq!(status(&handle), Some("connecting".into()));
    eventually("the real cause is recorded", WAIT, || {
        handle
            .tree()
            .actor("redis")
            .and_then(|a| a.last_failure.clone())
            .is_some()
    })
    .await;
    server.resume();
    eventually("redis ready", WAIT, || {
        status(&handle) == Some("ready".into())
    })
    .await;
    redis.ping().await.unwrap();
    handle.shutdown().await;
}

fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// No PING before every command: a connection handed back moments ago goes
/// out again untested. One the server dropped fails its call once, is
/// replaced, and the next call succeeds.
#[tokio::test]
async fn commands_go_without_a_ping_each_and_a_dropped_connection_is_replaced() {
    let server = PrivateRedis::start();
    let prefix = TestPrefix::on(server.port);
    let config = RedisConfig {
        url: format!("redis://127.0.0.1:{}/0", server.port),
        key_prefix: prefix.prefix.clone(),
        ..RedisConfig::default()
    };
    let (handle, redis) = start(config).await;
    let mut admin = server.client().get_connection().unwrap();
    eventually("ready", WAIT, || redis.is_ready()).await;
    redis.xadd_bulk("s", entries(1).into()).await.unwrap();
    let (pings, xadds) = (
        command_calls(&mut admin, "ping"),
        command_calls(&mut admin, "xadd"),
    );
    for _ in 0..100 {
        redis.xadd_bulk("s", entries(1).into()).await.unwrap();
    }
    assert_eq!(command_calls(&mut admin, "xadd") - xadds, 100);
    let pinged = command_calls(&mut admin, "ping") - pings;
    assert!(pinged < 10, "{pinged} PINGs for 100 commands");

    // The server drops every client connection but this one.
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut admin)
        .unwrap();
    let mut failed = 0;
    for _ in 0..3 {
        if redis.xadd_bulk("s", entries(1).into()).await.is_err() {
            failed += 1;
        }
    }
    assert!(failed <= 1, "{failed} of 3 calls failed after the drop");
    redis.xadd_bulk("s", entries(1).into()).await.unwrap();
    handle.shutdown().await;
}

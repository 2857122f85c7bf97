//! Outages as long as real ones, on the configuration an operator runs: the
//! default supervisor, backoff, breaker and timeouts, with only addresses
//! changed. Each test has its own redis-server and its own PostgreSQL cluster,
//! and really stops them.
//!
//! What must hold: no give-up, no worker restart spent on the outage, `/readyz`
//! 503 while a server is away and 200 within 5 s of its return, trades flowing
//! again by themselves, and after gap repair every simulator trade stored
//! exactly once.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::Certs;
use common::conservation::{self, stored};
use common::pg_cluster::PrivatePg;
use common::redis::{PrivateRedis, TestPrefix};
use common::{admin_endpoint, eventually_some};
use keel::admin::AdminServer;
use keel::config::{BackfillConfig, Config};
use keel::{tree, Runtime, RuntimeHandle, TaskOutcome};
use keel_actors::resource::pg::{PostgresConfig, SslMode};
use keel_actors::resource::redis::RedisConfig;
use keel_actors::service::receiver::ReceiverConfig;
use keel_core::registry::ActorState;
use keel_deribit::sim::{self, SimConfig, SimHandle};

const INSTRUMENTS: [&str; 2] = ["BTC-PERPETUAL", "ETH-PERPETUAL"];
const TOKEN: &str = "outage-token";
/// As long as a real outage: a Redis failover, a database restart.
const OUTAGE: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(60);
/// Trades per second the exchange makes once the receiver streams.
const RATE: f64 = 300.0;
/// The workers whose restarts must not move during an outage.
const WORKERS: [&str; 4] = [
    tree::RECEIVER,
    tree::DISTRIBUTOR,
    tree::ANALYZER,
    tree::SCHEDULER,
];

/// The servers and the exchange of one test, and the configuration pointing at
/// them: the defaults but for addresses, the key prefix and the admin port.
struct Servers {
    sim: SimHandle,
    redis: PrivateRedis,
    pg: PrivatePg,
    _prefix: TestPrefix,
    config: Config,
    /// The certificates of servers that speak TLS only.
    _certs: Option<Certs>,
}

impl Servers {
    async fn start() -> Self {
        Self::with(PrivateRedis::start(), PrivatePg::start()).await
    }

    /// Both servers TLS only, wanting client certificates; Keel verifies them
    /// fully (`sslmode = verify-full`, `rediss://` with `ca_file`) and shows
    /// its own.
    async fn start_tls() -> Self {
        keel_deribit::tls::ensure_provider();
        let certs = Certs::make(&["127.0.0.1", "localhost"], "postgres");
        let mut servers = Self::with(
            PrivateRedis::start_with_tls(&certs),
            PrivatePg::start_with_tls(&certs),
        )
        .await;
        let postgres = &mut servers.config.postgres;
        postgres.sslmode = Some(SslMode::VerifyFull);
        postgres.ca_file = Some(certs.path("ca.pem"));
        postgres.cert_file = Some(certs.path("client.pem"));
        postgres.key_file = Some(certs.path("client.key"));
        let redis = &mut servers.config.redis;
        redis.url = format!("rediss://127.0.0.1:{}/0", servers.redis.port);
        redis.ca_file = Some(certs.path("ca.pem"));
        redis.cert_file = Some(certs.path("client.pem"));
        redis.key_file = Some(certs.path("client.key"));
        servers._certs = Some(certs);
        servers
    }

    async fn with(redis: PrivateRedis, pg: PrivatePg) -> Self {
        let prefix = TestPrefix::on(redis.port);
        let sim = sim::start(SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
            trades_per_sec: 0.0,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let mut config = Config {
            postgres: PostgresConfig {
                url: pg.url(),
                ..PostgresConfig::default()
            },
            redis: RedisConfig {
                url: format!("redis://127.0.0.1:{}/0", redis.port),
                key_prefix: prefix.prefix.clone(),
                ..RedisConfig::default()
            },
            receiver: ReceiverConfig {
                url: sim.ws_url(),
                instruments: INSTRUMENTS.iter().map(|s| s.to_string()).collect(),
                ..ReceiverConfig::default()
            },
            backfill: BackfillConfig {
                http_url: sim.http_url(),
            },
            ..Config::default()
        };
        config.sim.in_daemon = false;
        Self {
            sim,
            redis,
            pg,
            _prefix: prefix,
            config,
            _certs: None,
        }
    }
}

/// The daemon's tree with its admin endpoint, as `keel run` serves it.
struct Daemon {
    handle: Arc<RuntimeHandle>,
    admin: AdminServer,
    http: reqwest::Client,
}

impl Daemon {
    async fn start(config: &Config) -> Self {
        let handle = Arc::new(Runtime::from_config(config).start().await.unwrap());
        let admin = admin_endpoint(&handle, TOKEN).await;
        Self {
            handle,
            admin,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until resource `name` says it serves.
    async fn resource_ready(&self, name: &str, within: Duration) {
        eventually_some(&format!("{name} ready"), within, || async {
            let tree = self.handle.tree();
            (tree.actor(name)?.details.get("status")? == "ready").then_some(())
        })
        .await;
    }

    /// The status `/readyz` answers (0 if it does not answer at all).
    async fn readyz(&self) -> u16 {
        self.http
            .get(format!("http://{}/readyz", self.admin.addr()))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    /// What `/readyz` says is not ready, by actor.
    async fn not_ready(&self) -> serde_json::Value {
        let body = self
            .http
            .get(format!("http://{}/readyz", self.admin.addr()))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok();
        let text = match body {
            Some(r) => r.text().await.unwrap_or_default(),
            None => String::new(),
        };
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()["not_ready"].clone()
    }

    /// Waits until `/readyz` answers `status`; returns how long that took.
    async fn readyz_becomes(&self, status: u16, within: Duration) -> Duration {
        let started = Instant::now();
        while self.readyz().await != status {
            assert!(
                started.elapsed() < within,
                "/readyz never answered {status} within {within:?}; not ready: {}",
                self.not_ready().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }

    fn restarts(&self) -> BTreeMap<&'static str, u32> {
        let tree = self.handle.tree();
        WORKERS
            .iter()
            .map(|w| (*w, tree.actor(w).map_or(0, |a| a.restarts)))
            .collect()
    }

    /// Each worker's last failure, for assertion messages.
    fn failures(&self) -> String {
        let tree = self.handle.tree();
        WORKERS
            .iter()
            .filter_map(|w| Some(format!("{w}: {:?}", tree.actor(w)?.last_failure.as_ref()?)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn running(&self, name: &str) -> bool {
        self.handle
            .tree()
            .actor(name)
            .is_some_and(|a| a.state == ActorState::Running)
    }
}

/// Waits until the stored trades grow by `more` (the private cluster is up).
async fn flows(pg: &PrivatePg, more: i64, within: Duration) {
    let client = pg.client().await;
    // The receiver streams without PostgreSQL: the trades table appears
    // when PgActor first connects and migrates, which may not have happened.
    eventually_some("the schema migrated", within, || async {
        let row = client
            .query_one("SELECT to_regclass('trades') IS NOT NULL", &[])
            .await
            .ok()?;
        row.get::<_, bool>(0).then_some(())
    })
    .await;
    let start = conservation::total(&client, &INSTRUMENTS).await;
    eventually_some("trades flowing into PostgreSQL", within, || async {
        (conservation::total(&client, &INSTRUMENTS).await >= start + more).then_some(())
    })
    .await;
}

/// Stops generation and waits until nothing more arrives.
async fn settle(servers: &Servers) {
    servers.sim.set_rate(0.0);
    let client = servers.pg.client().await;
    let mut last = -1;
    let mut quiet = 0;
    let deadline = Instant::now() + WAIT;
    while quiet < 3 {
        let now = conservation::total(&client, &INSTRUMENTS).await;
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        assert!(Instant::now() < deadline, "the pipeline never settled");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Shuts the daemon down (everything must drain), repairs the gaps the outage
/// left, and checks every simulator trade is stored once and candles are exact.
async fn finish(servers: &Servers, daemon: Daemon) {
    settle(servers).await;
    let report = daemon.handle.shutdown().await;
    assert!(report.drained(), "{report:?}");
    assert_eq!(
        conservation::repair(&servers.config, WAIT).await,
        TaskOutcome::Succeeded
    );
    let client = servers.pg.client().await;
    let total = conservation::assert_exactly_once(&client, &servers.sim, &INSTRUMENTS).await;
    assert!(total > 1_000, "the run generated enough trades ({total})");
    assert_eq!(
        conservation::candles_mismatched(&client).await,
        0,
        "candles equal the SQL aggregate of the stored trades"
    );
}

/// Waits until the receiver streams, then starts generation, so the first
/// trade the exchange makes is seen too.
async fn streaming(daemon: &Daemon, servers: &Servers) {
    eventually_some("receiver streaming", WAIT, || async {
        let tree = daemon.handle.tree();
        let connection = tree
            .actor(tree::RECEIVER)?
            .details
            .get("connection")?
            .clone();
        (connection == "streaming").then_some(())
    })
    .await;
    servers.sim.set_rate(RATE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_a_minute_under_load_is_ridden_out() {
    redis_stopped_for_a_minute(Servers::start().await).await;
}

/// The same outage with both servers speaking TLS only: the breaker, the pool
/// and the reconnects behave as over plain TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_a_minute_over_tls_is_ridden_out() {
    redis_stopped_for_a_minute(Servers::start_tls().await).await;
}

async fn redis_stopped_for_a_minute(mut servers: Servers) {
    let daemon = Daemon::start(&servers.config).await;
    streaming(&daemon, &servers).await;
    flows(&servers.pg, 500, WAIT).await;
    daemon.readyz_becomes(200, WAIT).await;
    let before = daemon.restarts();

    servers.redis.stop();
    daemon.readyz_becomes(503, Duration::from_secs(10)).await;
    // The receiver keeps reading and holds what it cannot publish.
    eventually_some("trades buffered while Redis is away", WAIT, || async {
        let tree = daemon.handle.tree();
        let buffered = tree.actor(tree::RECEIVER)?.details.get("receiver")?["buffered"].as_u64()?;
        (buffered > 100).then_some(())
    })
    .await;
    // The outage lasts OUTAGE; all along, /readyz names what the OS said, not
    // the symptom (no connection free in time) that calls see.
    let outage_ends = Instant::now() + OUTAGE;
    while Instant::now() < outage_ends {
        let reason = daemon.not_ready().await[tree::REDIS].clone();
        let reason = reason.as_str().unwrap_or_default().to_owned();
        assert!(reason.contains("refused"), "/readyz for redis: {reason:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(daemon.readyz().await, 503, "not ready while Redis is away");
    assert!(!daemon.handle.has_ended(), "the tree rode the outage out");
    for worker in WORKERS {
        assert!(daemon.running(worker), "{worker} still running");
    }

    servers.redis.resume();
    let back = daemon.readyz_becomes(200, Duration::from_secs(5)).await;
    assert!(
        back <= Duration::from_secs(5),
        "ready {back:?} after Redis returned"
    );
    flows(&servers.pg, 500, WAIT).await;
    assert_eq!(
        daemon.restarts(),
        before,
        "no worker restart spent on the outage"
    );
    finish(&servers, daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_a_minute_under_load_is_ridden_out() {
    let mut servers = Servers::start().await;
    let daemon = Daemon::start(&servers.config).await;
    streaming(&daemon, &servers).await;
    flows(&servers.pg, 500, WAIT).await;
    daemon.readyz_becomes(200, WAIT).await;
    let before = daemon.restarts();

    servers.pg.stop();
    daemon.readyz_becomes(503, Duration::from_secs(10)).await;
    tokio::time::sleep(OUTAGE).await;
    assert_eq!(
        daemon.readyz().await,
        503,
        "not ready while PostgreSQL is away"
    );
    assert!(!daemon.handle.has_ended(), "the tree rode the outage out");
    // Redis held the trades meanwhile.
    let waiting = daemon
        .handle
        .tree()
        .actor(tree::DISTRIBUTOR)
        .and_then(|a| a.details.get("waiting_for").map(|w| w["resource"].clone()));
    assert_eq!(
        waiting,
        Some(serde_json::json!(tree::PG)),
        "the distributor waits for pg"
    );

    servers.pg.resume();
    let back = daemon.readyz_becomes(200, Duration::from_secs(5)).await;
    assert!(
        back <= Duration::from_secs(5),
        "ready {back:?} after PostgreSQL returned"
    );
    flows(&servers.pg, 500, WAIT).await;
    assert_eq!(
        daemon.restarts(),
        before,
        "no worker restart spent on the outage"
    );
    finish(&servers, daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_boot_for_half_a_minute_delays_nothing_for_good() {
    let mut servers = Servers::start().await;
    servers.pg.stop();
    let daemon = Daemon::start(&servers.config).await;
    streaming(&daemon, &servers).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(daemon.readyz().await, 503, "not ready without PostgreSQL");
    assert!(!daemon.handle.has_ended(), "the tree waited for PostgreSQL");
    let before = daemon.restarts();

    servers.pg.resume();
    let back = daemon.readyz_becomes(200, Duration::from_secs(5)).await;
    assert!(
        back <= Duration::from_secs(5),
        "ready {back:?} after PostgreSQL came up"
    );
    flows(&servers.pg, 500, WAIT).await;
    assert_eq!(
        daemon.restarts(),
        before,
        "no worker restart spent on the wait"
    );
    let _ = stored(&servers.pg.client().await, INSTRUMENTS[0]).await;
    finish(&servers, daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_postgres_down_together_for_a_minute_are_ridden_out() {
    let mut servers = Servers::start().await;
    let daemon = Daemon::start(&servers.config).await;
    streaming(&daemon, &servers).await;
    flows(&servers.pg, 500, WAIT).await;
    daemon.readyz_becomes(200, WAIT).await;
    let before = daemon.restarts();

    servers.redis.stop();
    servers.pg.stop();
    daemon.readyz_becomes(503, Duration::from_secs(10)).await;
    tokio::time::sleep(OUTAGE).await;
    assert!(!daemon.handle.has_ended(), "the tree rode the outage out");

    servers.redis.resume();
    servers.pg.resume();
    let back = daemon.readyz_becomes(200, Duration::from_secs(5)).await;
    assert!(
        back <= Duration::from_secs(5),
        "ready {back:?} after both returned"
    );
    flows(&servers.pg, 500, WAIT).await;
    assert_eq!(
        daemon.restarts(),
        before,
        "no worker restart spent on the outage"
    );
    finish(&servers, daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flapping_for_a_minute_is_ridden_out() {
    let mut servers = Servers::start().await;
    let daemon = Daemon::start(&servers.config).await;
    streaming(&daemon, &servers).await;
    flows(&servers.pg, 500, WAIT).await;
    let before = daemon.restarts();

    let until = Instant::now() + OUTAGE;
    while Instant::now() < until {
        servers.redis.stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        servers.redis.resume();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(!daemon.handle.has_ended(), "the tree rode the flapping out");
    daemon.readyz_becomes(200, Duration::from_secs(5)).await;
    flows(&servers.pg, 500, WAIT).await;
    assert_eq!(
        daemon.restarts(),
        before,
        "no worker restart spent on the flapping; {}",
        daemon.failures()
    );
    finish(&servers, daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_restarted_through_the_admin_api_again_and_again_never_end_the_tree() {
    let servers = Servers::start().await;
    let daemon = Daemon::start(&servers.config).await;
    streaming(&daemon, &servers).await;
    flows(&servers.pg, 300, WAIT).await;
    let before = daemon.restarts();
    for round in 0..12 {
        let resource = if round % 2 == 0 {
            tree::REDIS
        } else {
            tree::PG
        };
        let answer = daemon
            .http
            .post(format!(
                "http://{}/api/actors/{resource}/restart",
                daemon.admin.addr()
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "restart {round} of {resource}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !daemon.handle.has_ended(),
            "the tree survived restart {round}"
        );
    }
    daemon.readyz_becomes(200, Duration::from_secs(5)).await;
    flows(&servers.pg, 300, WAIT).await;
    assert_eq!(daemon.restarts(), before, "the workers waited; none failed");
    finish(&servers, daemon).await;
}

/// Waits until resource `name` reports a cause containing `needle`; returns
/// the resource's details.
async fn cause_of(daemon: &Daemon, name: &str, needle: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let tree = daemon.handle.tree();
        let details = tree
            .actor(name)
            .and_then(|a| serde_json::to_value(&a.details).ok())
            .unwrap_or_default();
        let cause = details.get("cause").and_then(|c| c.as_str()).unwrap_or("");
        if cause.contains(needle) {
            return details;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reported {needle:?}; its details: {details}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz_body(daemon: &Daemon) -> String {
    daemon
        .http
        .get(format!("http://{}/readyz", daemon.admin.addr()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_reported_as_such_and_mending_it_needs_no_restart() {
    let mut servers = Servers::start().await;
    servers.config.postgres.url = servers.pg.url().replace("/keel", "/keel_missing");
    let daemon = Daemon::start(&servers.config).await;
    let details = cause_of(
        &daemon,
        tree::PG,
        "database \"keel_missing\" does not exist",
    )
    .await;
    assert_eq!(details["permanent"], true, "{details}");
    let body = readyz_body(&daemon).await;
    assert!(body.contains("keel_missing"), "/readyz says why: {body}");
    // The operator creates it; PgActor connects at its next attempt.
    servers
        .pg
        .client()
        .await
        .batch_execute("CREATE DATABASE keel_missing")
        .await
        .unwrap();
    daemon
        .resource_ready(tree::PG, Duration::from_secs(10))
        .await;
    // Mended: no longer waiting for an operator.
    let details = daemon
        .handle
        .tree()
        .actor(tree::PG)
        .unwrap()
        .details
        .clone();
    assert_eq!(details["permanent"], false, "{details:?}");
    assert!(!daemon.handle.has_ended());
    daemon.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_postgres_password_is_reported_as_such() {
    let mut servers = Servers::start().await;
    let pg = PrivatePg::start_with_password("right-password");
    servers.config.postgres.url = pg.url();
    servers.config.postgres.password = Some(keel_core::secret::Secret::new("wrong-password"));
    let daemon = Daemon::start(&servers.config).await;
    let details = cause_of(&daemon, tree::PG, "password authentication failed").await;
    assert_eq!(details["permanent"], true, "{details}");
    assert!(
        !details.to_string().contains("wrong-password"),
        "no secret in the tree"
    );
    assert!(!daemon.handle.has_ended());
    daemon.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_is_reported_as_such_and_mending_it_needs_no_restart() {
    let mut servers = Servers::start().await;
    let redis = PrivateRedis::start_with(&["--requirepass", "right-password"]);
    servers.config.redis.url = format!("redis://127.0.0.1:{}/0", redis.port);
    servers.config.redis.password = Some(keel_core::secret::Secret::new("wrong-password"));
    let daemon = Daemon::start(&servers.config).await;
    // Named and classified together, whichever path met it first (the
    // connection attempt, or a command's checkout through the pool).
    let details = cause_of(&daemon, tree::REDIS, "authentication failed").await;
    assert_eq!(details["permanent"], true, "{details}");
    assert!(readyz_body(&daemon).await.contains("authentication failed"));
    // The operator sets the password Keel was given.
    let mut conn = redis::Client::open(format!(
        "redis://:right-password@127.0.0.1:{}/0",
        redis.port
    ))
    .unwrap()
    .get_connection()
    .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("wrong-password")
        .query(&mut conn)
        .unwrap();
    daemon.readyz_becomes(200, Duration::from_secs(10)).await;
    assert!(!daemon.handle.has_ended());
    daemon.handle.shutdown().await;
}

/// TLS to PostgreSQL as libpq's `sslmode` says, against a cluster that takes
/// TLS only and whose certificate is for `localhost` while Keel dials
/// 127.0.0.1: `verify-full` refuses the name, `verify-full` with another CA
/// refuses the certificate, both as permanent causes an operator must fix;
/// `verify-ca` connects; `disable` is turned away by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_is_verified_as_sslmode_says() {
    keel_deribit::tls::ensure_provider();
    let certs = Certs::make(&["localhost"], "postgres");
    let pg = PrivatePg::start_with_tls(&certs);
    let servers = Servers::start().await;
    let tls = PostgresConfig {
        url: pg.url(),
        ca_file: Some(certs.path("ca.pem")),
        cert_file: Some(certs.path("client.pem")),
        key_file: Some(certs.path("client.key")),
        ..servers.config.postgres.clone()
    };
    let cases = [
        (SslMode::VerifyFull, "ca.pem", Some("not valid for name")),
        (SslMode::VerifyFull, "other-ca.pem", Some("UnknownIssuer")),
        (SslMode::Disable, "ca.pem", Some("no encryption")),
        (SslMode::VerifyCa, "ca.pem", None),
    ];
    for (mode, ca, refusal) in cases {
        let mut config = servers.config.clone();
        config.postgres = PostgresConfig {
            sslmode: Some(mode),
            ca_file: Some(certs.path(ca)),
            ..tls.clone()
        };
        if mode == SslMode::Disable {
            config.postgres.ca_file = None;
            config.postgres.cert_file = None;
            config.postgres.key_file = None;
        }
        assert!(config.postgres.problems().is_empty(), "{mode:?}");
        let daemon = Daemon::start(&config).await;
        match refusal {
            Some(needle) => {
                let details = cause_of(&daemon, tree::PG, needle).await;
                assert_eq!(details["permanent"], true, "{mode:?} {ca}: {details}");
                assert!(readyz_body(&daemon).await.contains(needle));
            }
            None => {
                daemon.resource_ready(tree::PG, WAIT).await;
            }
        }
        assert!(!daemon.handle.has_ended());
        daemon.handle.shutdown().await;
    }
}

/// A `rediss://` server whose certificate is for another name, or signed by a
/// CA Keel was not given, is refused with a permanent cause, as PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_refuses_a_wrong_name_or_ca_as_permanent() {
    keel_deribit::tls::ensure_provider();
    let certs = Certs::make(&["localhost"], "keel");
    let redis = PrivateRedis::start_with_tls(&certs);
    let servers = Servers::start().await;
    for (ca, needle) in [
        ("ca.pem", "not valid for name"),
        ("other-ca.pem", "UnknownIssuer"),
    ] {
        let mut config = servers.config.clone();
        config.redis.url = format!("rediss://127.0.0.1:{}/0", redis.port);
        config.redis.ca_file = Some(certs.path(ca));
        config.redis.cert_file = Some(certs.path("client.pem"));
        config.redis.key_file = Some(certs.path("client.key"));
        assert!(config.redis.problems().is_empty(), "{ca}");
        let daemon = Daemon::start(&config).await;
        let details = cause_of(&daemon, tree::REDIS, needle).await;
        assert_eq!(details["permanent"], true, "{ca}: {details}");
        assert!(!daemon.handle.has_ended());
        daemon.handle.shutdown().await;
    }
}

//! Redis for tests: a key prefix of the test's own (keys deleted afterwards), and
//! a private redis-server the test may stop and start.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const REDIS_PORT: u16 = 6379;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A prefix no other test uses; its keys are deleted when this is dropped.
pub struct TestPrefix {
    pub prefix: String,
    port: u16,
}

impl TestPrefix {
    pub fn new() -> Self {
        Self::on(REDIS_PORT)
    }

    pub fn on(port: u16) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let prefix = format!(
            "keel-test:{}:{}:{nanos}:",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self { prefix, port }
    }

    /// A direct connection for the test's own checks.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port))
            .and_then(|c| c.get_connection())
            .expect("Redis on 127.0.0.1 (run scripts/up)")
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port))
            .and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// A redis-server of this test's own, on a port of its own.
pub struct PrivateRedis {
    pub port: u16,
    process: Option<Child>,
    /// Extra `redis-server` arguments (`--requirepass`, ...).
    args: Vec<String>,
    /// TLS only, with these certificates: (CA, client certificate, client key).
    tls: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server started with extra arguments; the readiness probe then only
    /// checks that it accepts connections.
    pub fn start_with(args: &[&str]) -> Self {
        let port = super::pg_cluster::free_port();
        let mut redis = Self {
            port,
            process: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            tls: None,
        };
        redis.resume();
        redis
    }

    /// A server that speaks TLS only (`--port 0 --tls-port PORT`), with the
    /// server certificate of `certs`, and wants a client certificate signed by
    /// its CA (Redis's default `tls-auth-clients yes`).
    pub fn start_with_tls(certs: &super::certs::Certs) -> Self {
        let port = super::pg_cluster::free_port();
        let path = |f: &str| certs.path(f).to_string_lossy().into_owned();
        let args = vec![
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            path("server.pem"),
            "--tls-key-file".to_owned(),
            path("server.key"),
            "--tls-ca-cert-file".to_owned(),
            path("ca.pem"),
        ];
        let read = |f: &str| std::fs::read(certs.path(f)).unwrap();
        let mut redis = Self {
            port,
            process: None,
            args,
            tls: Some((read("ca.pem"), read("client.pem"), read("client.key"))),
        };
        redis.resume();
        redis
    }

    /// A client of this server (over TLS where it speaks only that).
    pub fn client(&self) -> redis::Client {
        match &self.tls {
            None => redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port)).unwrap(),
            Some((ca, cert, key)) => {
                keel_deribit::tls::ensure_provider();
                redis::Client::build_with_tls(
                    // By name: every certificate a test makes is for localhost.
                    format!("rediss://localhost:{}/0", self.port),
                    redis::TlsCertificates {
                        client_tls: Some(redis::ClientTlsConfig {
                            client_cert: cert.clone(),
                            client_key: key.clone(),
                        }),
                        root_cert: Some(ca.clone()),
                    },
                )
                .unwrap()
            }
        }
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn resume(&mut self) {
        let plain_port = if self.tls.is_some() {
            "0".to_owned()
        } else {
            self.port.to_string()
        };
        let child = Command::new("redis-server")
            .args(["--port", &plain_port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/up)");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = self
                .client()
                .get_connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            let answered = match &pong {
                Ok(_) => true,
                // A server that wants a password is up all the same; one
                // still loading its append-only file is not.
                Err(e) => {
                    self.tls.is_none()
                        && !self.args.is_empty()
                        && e.code().is_some_and(|code| code != "LOADING")
                }
            };
            if answered {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server, as a crash or an operator would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// RedisActor settings for a test: its own server and prefix, a short checkout
/// timeout and quick reconnects.
pub fn fast_config(port: u16, prefix: &TestPrefix) -> keel_actors::resource::redis::RedisConfig {
    keel_actors::resource::redis::RedisConfig {
        url: format!("redis://127.0.0.1:{port}/0"),
        key_prefix: prefix.prefix.clone(),
        checkout_timeout: Duration::from_millis(300),
        connect_backoff: keel_core::delay::BackoffConfig {
            min: Duration::from_millis(10),
            max: Duration::from_millis(100),
            multiplier: 2.0,
            jitter: 0.0,
        },
        ..Default::default()
    }
}

//! The `[redis]` section.

use std::path::PathBuf;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::{Deserialize, Serialize};

use super::breaker::BreakerConfig;
use keel_core::delay::BackoffConfig;
use keel_core::secret::Secret;

/// Every pooled connection times a reply out after this long (set on each;
/// the redis crate's default is 500 ms). A read of a full batch can be several
/// MB: on a loaded 2-core machine 500 ms ran out on it, the connection was
/// dropped, and the entries it had delivered waited for a claim.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest `XREADGROUP BLOCK` allowed: it must return (empty) before the
/// response timeout, with room for the network and a busy client (100 ms of
/// room was seen to run out on a loaded 2-core machine).
pub const MAX_READ_BLOCK: Duration = Duration::from_millis(300);

/// How RedisActor connects, pools, writes and trips its breaker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`, without a password.
    #[serde(default = "default_url")]
    pub url: String,
    /// The password (or `password_file`, or `KEEL__REDIS__PASSWORD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Prepended to every key and stream, so several deployments (or tests)
    /// share one server without meeting.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Pool size.
    #[serde(default = "default_max_size")]
    pub max_size: u32,
    /// Time a call waits for a connection before it fails (and counts against
    /// the breaker).
    #[serde(with = "humantime_serde", default = "default_checkout_timeout")]
    pub checkout_timeout: Duration,
    /// Bulk writes in flight at once.
    #[serde(default = "default_write_concurrency")]
    pub write_concurrency: usize,
    /// `MAXLEN ~` applied to every stream on write.
    #[serde(default = "default_stream_maxlen")]
    pub stream_maxlen: u64,
    /// `XREADGROUP BLOCK`; at most 300 ms (see [`MAX_READ_BLOCK`]).
    #[serde(with = "humantime_serde", default = "default_read_block")]
    pub read_block: Duration,
    /// When calls stop touching the network after failures, and for how long.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Delay between connect attempts while the server is unreachable.
    #[serde(default = "default_connect_backoff")]
    pub connect_backoff: BackoffConfig,
    /// How often a connected resource checks its server is still there (one
    /// pooled checkout, which the pool validates), so readiness turns false while
    /// idle too; calls are never preceded by a check of their own.
    #[serde(with = "humantime_serde", default = "default_health_every")]
    pub health_every: Duration,
    /// With a `rediss://` URL: a PEM file of the CA(s) that sign the server's
    /// certificate, trusted instead of the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// With a `rediss://` URL: a client certificate chain (PEM) for a server
    /// that asks for one (`tls-auth-clients`); needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

fn default_url() -> String {
    "redis://127.0.0.1:6379/0".into()
}
fn default_key_prefix() -> String {
    "keel:".into()
}
fn default_max_size() -> u32 {
    8
}
fn default_checkout_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_write_concurrency() -> usize {
    4
}
fn default_stream_maxlen() -> u64 {
    1_000_000
}
fn default_read_block() -> Duration {
    Duration::from_millis(250)
}
fn default_health_every() -> Duration {
    Duration::from_secs(2)
}
/// Capped at 2 s: an attempt against a server that is away costs one refused
/// connection, and the cap is how soon after its return the resource is back.
fn default_connect_backoff() -> BackoffConfig {
    BackoffConfig {
        min: Duration::from_millis(200),
        max: Duration::from_secs(2),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            password: None,
            key_prefix: default_key_prefix(),
            max_size: default_max_size(),
            checkout_timeout: default_checkout_timeout(),
            write_concurrency: default_write_concurrency(),
            stream_maxlen: default_stream_maxlen(),
            read_block: default_read_block(),
            breaker: BreakerConfig::default(),
            connect_backoff: default_connect_backoff(),
            health_every: default_health_every(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl RedisConfig {
    /// The driver's connection settings, password included.
    pub fn connection_info(&self) -> Result<redis::ConnectionInfo, String> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("a redis:// or rediss:// URL ({})", e.category()))?;
        if info.redis_settings().password().is_some() {
            return Err("a URL without a password: put it in `password` or `password_file`".into());
        }
        let info = match &self.password {
            Some(password) => {
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_password(password.expose());
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if tls {
            // The redis crate builds its TLS configuration from the process's
            // default provider.
            keel_deribit::tls::ensure_provider();
        }
        if self.ca_file.is_none() && self.cert_file.is_none() {
            return Ok(info);
        }
        if !tls {
            return Err("a rediss:// URL for ca_file and cert_file (TLS)".into());
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("readable TLS files ({}: {e})", path.display()))
        };
        let client_tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => return Err("cert_file and key_file together".into()),
        };
        let root_cert = self.ca_file.as_ref().map(read).transpose()?;
        let certificates = redis::TlsCertificates {
            client_tls,
            root_cert,
        };
        // The error is about the files (a bad PEM); it never holds their content.
        redis::Client::build_with_tls(info, certificates)
            .map(|client| client.get_connection_info().clone())
            .map_err(|e| {
                format!(
                    "usable TLS files: ca_file, cert_file, key_file ({})",
                    e.category()
                )
            })
    }

    /// Every problem, as `(key, what is expected)` with keys relative to the section.
    pub fn problems(&self) -> Vec<(String, String)> {
        use keel_core::bounds::{Check, HOUR, MINUTE, SECOND};
        let ms = Duration::from_millis;
        let mut check = Check::new();
        if let Err(expected) = self.connection_info() {
            check.push("url", expected);
        }
        if self.key_prefix.len() > 64 || self.key_prefix.bytes().any(|b| !b.is_ascii_graphic()) {
            check.push(
                "key_prefix",
                "at most 64 printable characters without spaces",
            );
        }
        if self.read_block.is_zero() || self.read_block > MAX_READ_BLOCK {
            check.push(
                "read_block",
                format!(
                    "between 1ms and {}: the redis client times out a reply after {}",
                    humantime::format_duration(MAX_READ_BLOCK),
                    humantime::format_duration(RESPONSE_TIMEOUT)
                ),
            );
        }
        check
            .count("max_size", self.max_size.into(), 1, 1000)
            .count("write_concurrency", self.write_concurrency as u64, 1, 256)
            .count("stream_maxlen", self.stream_maxlen, 1000, 1_000_000_000)
            .duration(
                "checkout_timeout",
                self.checkout_timeout,
                ms(10),
                5 * MINUTE,
            )
            .duration("health_every", self.health_every, SECOND, HOUR)
            .nested("breaker", self.breaker.problems())
            .nested("connect_backoff", self.connect_backoff.problems())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_longer_than_the_reply_timeout_is_refused() {
        let config = RedisConfig {
            read_block: Duration::from_millis(600),
            ..RedisConfig::default()
        };
        let keys: Vec<String> = config.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["read_block"]);
        assert!(RedisConfig::default().problems().is_empty());
    }

    #[test]
    fn passwords_stay_out_of_urls_and_output() {
        let in_url = RedisConfig {
            url: "redis://:hunter2@127.0.0.1:6379/0".into(),
            ..RedisConfig::default()
        };
        let problems = in_url.problems();
        assert_eq!(problems[0].0, "url");
        assert!(!problems[0].1.contains("hunter2"));

        let separate = RedisConfig {
            password: Some(Secret::new("hunter2")),
            ..RedisConfig::default()
        };
        let info = separate.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("hunter2"));
        assert!(!format!("{separate:?}").contains("hunter2"));
    }
}

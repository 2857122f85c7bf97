//! The `[postgres]` section.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use keel_core::delay::BackoffConfig;
use keel_core::secret::Secret;

/// How PgActor connects, pools and retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`, without a password.
    #[serde(default = "default_url")]
    pub url: String,
    /// The password, if the server wants one (or `password_file`, or
    /// `KEEL__POSTGRES__PASSWORD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Pool size. Small pools are the norm behind PgBouncer.
    #[serde(default = "default_max_size")]
    pub max_size: u32,
    /// Time to open one connection.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Time a call waits for a free connection before that attempt fails.
    #[serde(with = "humantime_serde", default = "default_checkout_timeout")]
    pub checkout_timeout: Duration,
    /// Server-side limit per statement (`SET LOCAL statement_timeout`, so it also
    /// holds behind PgBouncer's transaction pooling).
    #[serde(with = "humantime_serde", default = "default_statement_timeout")]
    pub statement_timeout: Duration,
    /// Attempts per call (first try included) for transient errors.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay between attempts of one call.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: BackoffConfig,
    /// Delay between connect attempts while the server is unreachable.
    #[serde(default = "default_connect_backoff")]
    pub connect_backoff: BackoffConfig,
    /// How often a connected resource checks its server is still there (one
    /// pooled checkout, which the pool validates), so readiness turns false while
    /// idle too; calls are never preceded by a check of their own.
    #[serde(with = "humantime_serde", default = "default_health_every")]
    pub health_every: Duration,
    /// Rows per transaction when deleting by age (janitor).
    #[serde(default = "default_delete_batch")]
    pub delete_batch: u32,
    /// TLS to the server, as libpq's `sslmode` (default `prefer`; or in the URL
    /// as `?sslmode=disable|prefer|require`, but not in both places).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// A PEM file of the CA(s) that sign the server's certificate, trusted
    /// instead of the public roots (`sslrootcert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) for servers that ask for one
    /// (`sslcert`); needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM, `sslkey`); needs `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// How much TLS PgActor insists on, with libpq's names and meanings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, else plain; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is checked only if `ca_file` is given
    /// (then as `verify-ca`), as libpq does.
    Require,
    /// TLS with a certificate signed by `ca_file` (or a public root).
    VerifyCa,
    /// As `verify-ca`, and the certificate is for the host in the URL.
    VerifyFull,
}

impl SslMode {
    /// The name written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

fn default_url() -> String {
    "postgres://postgres@127.0.0.1:5432/keel".into()
}
fn default_max_size() -> u32 {
    4
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_checkout_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_backoff() -> BackoffConfig {
    BackoffConfig {
        min: Duration::from_millis(50),
        max: Duration::from_secs(2),
        multiplier: 2.0,
        jitter: 0.2,
    }
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
fn default_health_every() -> Duration {
    Duration::from_secs(2)
}
fn default_delete_batch() -> u32 {
    5_000
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            password: None,
            max_size: default_max_size(),
            connect_timeout: default_connect_timeout(),
            checkout_timeout: default_checkout_timeout(),
            statement_timeout: default_statement_timeout(),
            max_attempts: default_max_attempts(),
            retry_backoff: default_retry_backoff(),
            connect_backoff: default_connect_backoff(),
            health_every: default_health_every(),
            delete_batch: default_delete_batch(),
            sslmode: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl PostgresConfig {
    /// The driver configuration, password included.
    pub fn driver_config(&self) -> Result<tokio_postgres::Config, String> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| format!("a postgres:// URL ({e})"))?;
        if config.get_password().is_some() {
            return Err("a URL without a password: put it in `password` or `password_file`".into());
        }
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        config.connect_timeout(self.connect_timeout);
        config.application_name("keel");
        config.ssl_mode(match self.tls_mode() {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(config)
    }

    /// The TLS mode in effect: `sslmode`, else the URL's, else `prefer`.
    pub fn tls_mode(&self) -> SslMode {
        use tokio_postgres::config::SslMode as Url;
        if let Some(mode) = self.sslmode {
            return mode;
        }
        match self
            .url
            .parse::<tokio_postgres::Config>()
            .map(|c| c.get_ssl_mode())
        {
            Ok(Url::Disable) => SslMode::Disable,
            Ok(Url::Require) => SslMode::Require,
            _ => SslMode::Prefer,
        }
    }

    /// Every problem, as `(key, what is expected)` with keys relative to the section.
    pub fn problems(&self) -> Vec<(String, String)> {
        use keel_core::bounds::{Check, HOUR, MINUTE, SECOND};
        let ms = Duration::from_millis;
        let mut check = Check::new();
        if let Err(expected) = self.driver_config() {
            check.push("url", expected);
        } else if self.sslmode.is_some() && self.url.contains("sslmode=") {
            check.push(
                "url",
                "a URL without sslmode when [postgres] sslmode is given: say it once",
            );
        }
        for (key, problem) in super::tls::problems(self) {
            check.push(key, problem);
        }
        check
            .count("max_size", self.max_size.into(), 1, 1000)
            .count("max_attempts", self.max_attempts.into(), 1, 100)
            .count("delete_batch", self.delete_batch.into(), 1, 1_000_000)
            .duration("connect_timeout", self.connect_timeout, ms(100), 5 * MINUTE)
            .duration(
                "checkout_timeout",
                self.checkout_timeout,
                ms(10),
                5 * MINUTE,
            )
            .duration("statement_timeout", self.statement_timeout, ms(100), HOUR)
            .duration("health_every", self.health_every, SECOND, HOUR)
            .nested("retry_backoff", self.retry_backoff.problems())
            .nested("connect_backoff", self.connect_backoff.problems())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_and_not_echoed() {
        let config = PostgresConfig {
            url: "postgres://keel:hunter2@db/keel".into(),
            ..PostgresConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "url");
        assert!(!problems[0].1.contains("hunter2"));
    }

    #[test]
    fn tls_settings_are_checked_together() {
        let keys = |config: PostgresConfig| -> Vec<String> {
            config.problems().into_iter().map(|(key, _)| key).collect()
        };
        let base = PostgresConfig::default();
        assert!(keys(base.clone()).is_empty());
        assert_eq!(base.tls_mode(), SslMode::Prefer);
        let from_url = PostgresConfig {
            url: "postgres://keel@db/keel?sslmode=require".into(),
            ..base.clone()
        };
        assert_eq!(from_url.tls_mode(), SslMode::Require);
        assert!(keys(from_url.clone()).is_empty());
        // Said twice: refused, even if both agree.
        assert_eq!(
            keys(PostgresConfig {
                sslmode: Some(SslMode::Require),
                ..from_url
            }),
            ["url"]
        );
        assert_eq!(
            keys(PostgresConfig {
                cert_file: Some("/x/client.pem".into()),
                ..base.clone()
            }),
            ["key_file"]
        );
        assert_eq!(
            keys(PostgresConfig {
                sslmode: Some(SslMode::Disable),
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..base.clone()
            }),
            ["sslmode", "ca_file"]
        );
        let driver = PostgresConfig {
            sslmode: Some(SslMode::VerifyFull),
            ..base
        }
        .driver_config()
        .unwrap();
        assert_eq!(
            driver.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn the_password_reaches_the_driver_but_not_debug_output() {
        let config = PostgresConfig {
            password: Some(Secret::new("hunter2")),
            ..PostgresConfig::default()
        };
        let driver = config.driver_config().unwrap();
        assert_eq!(driver.get_password(), Some(&b"hunter2"[..]));
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}

//! Reading, overriding, resolving and validating a configuration file.

use std::collections::BTreeMap;
use std::path::Path;

use toml::{Table, Value};

use super::error::{ConfigError, Problem};
use super::{env, secret_files, Config};

/// The configuration every command uses when `--config` is not given.
pub const DEFAULT_PATH: &str = "conf/keel.toml";

impl Config {
    /// Loads `path`, applies this process's `KEEL__*` environment, resolves secret
    /// files and validates everything.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // `vars_os`, not `vars`: a non-UTF-8 variable elsewhere must not panic us.
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::load_with_env(path, vars)
    }

    /// The defaults in code with this process's `KEEL__*` environment applied,
    /// validated like a file.
    pub fn load_defaults() -> Result<Self, ConfigError> {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::parse("", Path::new("(defaults in code)"), vars)
    }

    /// Like [`Config::load`], with the environment given explicitly.
    pub fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, vars)
    }

    /// Parses configuration text that came from `file`.
    pub fn parse(
        text: &str,
        file: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: file.to_owned(),
            problems,
        };
        let mut table: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let origins = env::apply(&mut table, vars).map_err(|(var, expected)| {
            invalid(vec![Problem {
                key: var.clone(),
                message: format!("expected {expected}"),
                from_env: Some(var),
            }])
        })?;
        secret_files::resolve(&mut table, "").map_err(|(key, expected)| {
            invalid(vec![problem(&origins, key, format!("expected {expected}"))])
        })?;
        let config: Config =
            serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                invalid(vec![problem(&origins, key, e.inner().message().to_owned())])
            })?;
        let problems: Vec<Problem> = config
            .problems()
            .into_iter()
            .map(|(key, expected)| problem(&origins, key, format!("expected {expected}")))
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(invalid(problems))
        }
    }
}

fn problem(origins: &BTreeMap<String, String>, key: String, message: String) -> Problem {
    Problem {
        from_env: origins.get(&key).cloned(),
        key,
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use keel_core::supervisor::Strategy;

    fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::parse(text, Path::new("conf/test.toml"), vars)
    }

    fn problems(err: ConfigError) -> Vec<Problem> {
        match err {
            ConfigError::Invalid { problems, .. } => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("", &[]).unwrap(), Config::default());
    }

    #[test]
    fn executor_instruments_can_be_named_in_the_environment() {
        // Environment keys are lower-cased; Deribit's names are upper case.
        let prefix = "KEEL__EXECUTOR__INSTRUMENTS__BTC-PERPETUAL__";
        let vars = [
            (format!("{prefix}MAX_AMOUNT"), "1000"),
            (format!("{prefix}MAX_POSITION"), "5000"),
            (format!("{prefix}PRICE_BAND"), "0.05"),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let config = parse("", &vars).unwrap();
        let names: Vec<&str> = config
            .executor
            .instruments
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, ["BTC-PERPETUAL"]);
        assert_eq!(
            config.executor.instruments["BTC-PERPETUAL"].max_amount,
            1000.0
        );
    }

    #[test]
    fn values_from_the_file_and_the_environment() {
        let config = parse(
            "[supervisor]\nstrategy = \"rest_for_one\"\nperiod = \"2m\"",
            &[("KEEL__SUPERVISOR__MAX_RESTARTS", "3")],
        )
        .unwrap();
        assert_eq!(config.supervisor.strategy, Strategy::RestForOne);
        assert_eq!(config.supervisor.period, Duration::from_secs(120));
        assert_eq!(config.supervisor.max_restarts, 3);
    }

    #[test]
    fn an_unknown_key_is_named_in_full() {
        let p = problems(parse("[supervisor]\nmax_restart = 3", &[]).unwrap_err());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "supervisor.max_restart");
        assert!(
            p[0].message.contains("unknown field `max_restart`"),
            "{}",
            p[0]
        );
        assert!(p[0].message.contains("max_restarts"), "{}", p[0]);
    }

    #[test]
    fn a_wrong_type_names_the_key_and_what_was_expected() {
        let p = problems(parse("[supervisor]\nmax_restarts = \"ten\"", &[]).unwrap_err());
        assert_eq!(p[0].key, "supervisor.max_restarts");
        assert!(p[0].message.contains("expected u32"), "{}", p[0]);
    }

    #[test]
    fn a_bad_environment_value_names_its_variable() {
        let err = parse("", &[("KEEL__SUPERVISOR__PERIOD", "soon")]).unwrap_err();
        let p = problems(err);
        assert_eq!(p[0].key, "supervisor.period");
        assert_eq!(p[0].from_env.as_deref(), Some("KEEL__SUPERVISOR__PERIOD"));
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = "[supervisor]\nperiod = \"0s\"\n[supervisor.backoff]\nmin = \"2s\"\nmax = \"1s\"\njitter = 3.0";
        let keys: Vec<String> = problems(parse(text, &[]).unwrap_err())
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "supervisor.backoff.max",
                "supervisor.backoff.jitter",
                "supervisor.period"
            ]
        );
    }

    #[test]
    fn values_out_of_their_range_are_refused_naming_the_key() {
        let cases = [
            ("[receiver]\ninstruments = []", "receiver.instruments"),
            ("[receiver]\ninstruments = [\"\"]", "receiver.instruments"),
            (
                "[receiver]\ninstruments = [\"BTC.PERPETUAL\"]",
                "receiver.instruments",
            ),
            ("[receiver]\nurl = \"ws://\"", "receiver.url"),
            (
                "[receiver]\nurl = \"ws://user:pass@example.com/ws\"",
                "receiver.url",
            ),
            ("[backfill]\nhttp_url = \"not a url\"", "backfill.http_url"),
            (
                "[backfill]\nhttp_url = \"https://u:p@example.com\"",
                "backfill.http_url",
            ),
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
            (
                "[schedule]\ninstruments_every = \"10ms\"",
                "schedule.instruments_every",
            ),
            (
                "[schedule]\ngap_repair_every = \"0s\"",
                "schedule.gap_repair_every",
            ),
            ("[redis]\nstream_maxlen = 0", "redis.stream_maxlen"),
            (
                "[redis]\nstream_maxlen = 100000\n[receiver]\nmax_backlog = 100000",
                "receiver.max_backlog",
            ),
            (
                "[registry]\nmessage_ring = 100000000000",
                "registry.message_ring",
            ),
            ("[admin]\ntoken = \"\"", "admin.token"),
            ("[admin]\ntoken = \" \"", "admin.token"),
            (
                "[postgres]\nurl = \"postgres://keel@127.0.0.1/keel?sslmode=require\"\nsslmode = \"verify-full\"",
                "postgres.url",
            ),
            (
                "[postgres]\ncert_file = \"/etc/keel/client.pem\"",
                "postgres.key_file",
            ),
            (
                "[redis]\nca_file = \"/etc/keel/ca.pem\"",
                "redis.url",
            ),
            (
                "[supervisor]\nshutdown_deadline = \"100y\"",
                "supervisor.shutdown_deadline",
            ),
            (
                "[supervisor.backoff]\nmax = \"1000y\"",
                "supervisor.backoff.max",
            ),
            (
                "[distributor]\nmax_deliveries = 0",
                "distributor.max_deliveries",
            ),
            ("[analyzer]\nclaim_every = \"0s\"", "analyzer.claim_every"),
            ("[redis.breaker]\nwindow = \"0s\"", "redis.breaker.window"),
            ("[instruments]\ncurrencies = []", "instruments.currencies"),
            ("[sim]\ntrades_per_sec = 1e300", "sim.trades_per_sec"),
        ];
        for (text, key) in cases {
            let p = problems(parse(text, &[]).unwrap_err());
            assert!(p.iter().any(|p| p.key == key), "{text}: {p:?}");
            for p in &p {
                assert!(!p.message.contains("pass@"), "{p}");
                assert!(!p.message.contains("u:p@"), "{p}");
            }
        }
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let err = parse("[supervisor\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("conf/test.toml: not valid TOML"), "{text}");
        assert!(text.contains("line 1"), "{text}");
    }

    #[test]
    fn the_shipped_configurations_are_valid() {
        // The production example reads its password from a mounted secret; point
        // that at a real file the way an operator would, through the environment.
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pg");
        std::fs::write(&secret, "s3cret\n").unwrap();
        // Its TLS files too: a CA, a certificate and its key, as scripts/sim-cert
        // makes them.
        let made = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sim-cert"),
        )
        .arg(dir.path())
        .output()
        .unwrap();
        assert!(made.status.success(), "{made:?}");
        let tls =
            |name: &str, file: &str| (name.to_owned(), dir.path().join(file).display().to_string());
        let env = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), secret.display().to_string()))
                .chain([
                    tls("KEEL__POSTGRES__CA_FILE", "ca.pem"),
                    tls("KEEL__REDIS__CA_FILE", "ca.pem"),
                    tls("KEEL__REDIS__CERT_FILE", "cert.pem"),
                    tls("KEEL__REDIS__KEY_FILE", "key.pem"),
                ])
                .filter(|_| !names.is_empty())
                .collect()
        };
        let files = [
            ("conf/keel.toml", env(&[])),
            (
                "conf/production.example.toml",
                env(&[
                    "KEEL__POSTGRES__PASSWORD_FILE",
                    "KEEL__REDIS__PASSWORD_FILE",
                    "KEEL__RECEIVER__CLIENT_SECRET_FILE",
                    "KEEL__ADMIN__TOKEN_FILE",
                ]),
            ),
        ];
        for (file, vars) in files {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            match Config::load_with_env(&path, vars) {
                Ok(config) => {
                    let printed = config.to_redacted_toml().unwrap();
                    assert!(!printed.contains("s3cret"), "{printed}");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

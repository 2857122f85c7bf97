//! Configuration errors: each names the file, the key and what was expected.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key (`supervisor.backoff.max`), or empty for the whole file.
    pub key: String,
    /// What is wrong, or what was expected.
    pub message: String,
    /// The environment variable the value came from, if it did not come from the file.
    pub from_env: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() {
            "(top level)"
        } else {
            &self.key
        };
        write!(f, "{key}: {}", self.message)?;
        if let Some(var) = &self.from_env {
            write!(f, " (value from environment variable {var})")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded. Nothing starts after one of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read configuration: {source}", file.display())]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: not valid TOML: {message}", file.display())]
    Syntax {
        /// The configuration file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Keys or values are wrong; every problem found is listed.
    #[error("{}: invalid configuration:{}", file.display(), list(problems))]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

//! PgActor's errors, and which driver errors are worth a retry.

use std::error::Error as _;

use tokio_postgres::error::SqlState;

use crate::resource::NotRunning;

/// What a PgActor call can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PgError {
    /// The server refused the statement for a reason a retry cannot fix
    /// (syntax 42xxx, constraint 23xxx, data 22xxx, authentication 28xxx, ...).
    #[error("postgres rejected `{op}` with SQLSTATE {sqlstate}: {message}")]
    Rejected {
        /// The operation.
        op: &'static str,
        /// The five-character SQLSTATE.
        sqlstate: String,
        /// The server's message.
        message: String,
    },
    /// Transient errors (connection lost, serialization failure, pool exhausted,
    /// ...) lasted through every attempt.
    #[error("postgres unavailable for `{op}` after {attempts} attempts: {last}")]
    Unavailable {
        /// The operation.
        op: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// A non-idempotent statement may or may not have been applied, so it was not
    /// retried.
    #[error("outcome of `{op}` unknown: {cause}")]
    OutcomeUnknown {
        /// The operation.
        op: &'static str,
        /// What interrupted it.
        cause: String,
    },
    /// A value could not be converted to or from its SQL type.
    #[error("`{op}` failed: {message}")]
    Other {
        /// The operation.
        op: &'static str,
        /// The driver's message.
        message: String,
    },
    /// The actor is not running.
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
}

impl PgError {
    /// A bounded name for the kind of failure, for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            PgError::Rejected { .. } => "rejected",
            PgError::Unavailable { .. } => "unavailable",
            PgError::OutcomeUnknown { .. } => "outcome_unknown",
            PgError::Other { .. } => "other",
            PgError::NotRunning(_) => "not_running",
        }
    }

    /// The SQLSTATE of a rejected statement.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Rejected { sqlstate, .. } => Some(sqlstate),
            _ => None,
        }
    }
}

/// How the executor treats one driver error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Class {
    /// Retry. `maybe_applied`: the statement may have reached the server.
    Transient { maybe_applied: bool, cause: String },
    /// Return at once with this SQLSTATE.
    Rejected { sqlstate: String, message: String },
    /// Return at once (conversion and protocol errors).
    Other(String),
}

/// SQLSTATEs that a retry can get past.
fn is_transient(state: &SqlState) -> bool {
    let code = state.code();
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "55P03"
        )
}

pub(super) fn classify(err: &tokio_postgres::Error) -> Class {
    if let Some(db) = err.as_db_error() {
        let state = db.code();
        return if is_transient(state) {
            // The server refused or aborted the statement: nothing was applied.
            Class::Transient {
                maybe_applied: false,
                cause: format!("SQLSTATE {}: {}", state.code(), db.message()),
            }
        } else {
            Class::Rejected {
                sqlstate: state.code().to_owned(),
                message: db.message().to_owned(),
            }
        };
    }
    let io = err
        .source()
        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    if err.is_closed() || io {
        return Class::Transient {
            maybe_applied: true,
            cause: err.to_string(),
        };
    }
    // Connect-phase failures without SQLSTATE (refused, timed out, DNS).
    let text = err.to_string();
    if text.contains("error connecting") || text.contains("timeout") || text.contains("timed out") {
        return Class::Transient {
            maybe_applied: false,
            cause: text,
        };
    }
    Class::Other(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_sqlstates_are_the_documented_ones() {
        for code in [
            "08000", "08006", "08P01", "40001", "40P01", "57P01", "57P02", "57P03", "53300",
            "55P03",
        ] {
            assert!(is_transient(&SqlState::from_code(code)), "{code}");
        }
        for code in [
            "42601", "42P01", "23505", "22021", "28P01", "57014", "25P02",
        ] {
            assert!(!is_transient(&SqlState::from_code(code)), "{code}");
        }
    }
}

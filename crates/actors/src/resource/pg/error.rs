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
        /// The operation's name (`insert_trades`, `xadd_bulk`, ...).
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
        /// The operation's name (`insert_trades`, `xadd_bulk`, ...).
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
        /// The operation's name (`insert_trades`, `xadd_bulk`, ...).
        op: &'static str,
        /// What interrupted it.
        cause: String,
    },
    /// A value could not be converted to or from its SQL type.
    #[error("`{op}` failed: {message}")]
    Other {
        /// The operation's name (`insert_trades`, `xadd_bulk`, ...).
        op: &'static str,
        /// The driver's message.
        message: String,
    },
    /// The actor is not running.
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
}

impl crate::resource::CallError for PgError {
    fn outage(&self) -> Option<std::time::Duration> {
        match self {
            // Every PgActor operation is idempotent, so an unknown outcome is
            // settled by doing it again once the server is back.
            PgError::Unavailable { .. }
            | PgError::OutcomeUnknown { .. }
            | PgError::NotRunning(_) => Some(std::time::Duration::ZERO),
            PgError::Rejected { .. } | PgError::Other { .. } => None,
        }
    }
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

/// SQLSTATEs that a retry can get past. Authentication (28xxx) and a missing
/// database (3D000) only happen while connecting: they are outages an operator
/// fixes, after which the same call succeeds.
fn is_transient(state: &SqlState) -> bool {
    let code = state.code();
    code.starts_with("08")
        || code.starts_with("28")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "55P03" | "3D000"
        )
}

/// What to do about a connect error only an operator can fix, or `None` when a
/// retry may get past it.
pub(super) fn permanent_fix(err: &tokio_postgres::Error) -> Option<&'static str> {
    if let Some(fix) = tls_fix(err) {
        return Some(fix);
    }
    let db = err.as_db_error()?;
    let code = db.code().code();
    if code == "28000" && db.message().contains("no encryption") {
        Some("the server's pg_hba.conf takes TLS connections only: set [postgres] sslmode to require, verify-ca or verify-full")
    } else if code.starts_with("28") {
        Some("check the user in [postgres] url and the password ([postgres] password, password_file or KEEL__POSTGRES__PASSWORD), and the server's pg_hba.conf")
    } else if code == "3D000" {
        Some("create the database, or name an existing one in [postgres] url")
    } else if code == "42501" {
        Some("grant the user CONNECT on the database")
    } else {
        None
    }
}

/// What to do about a TLS handshake that failed for a reason of configuration
/// (the certificate, the name, a server without TLS), not of the network.
fn tls_fix(err: &tokio_postgres::Error) -> Option<&'static str> {
    use crate::resource::TlsRefusal;
    match crate::resource::tls_refusal(err) {
        Some(TlsRefusal::WrongName) => Some("the server's certificate is not for the host in [postgres] url: connect by a name the certificate holds, or use sslmode = verify-ca"),
        Some(TlsRefusal::Untrusted) => Some("the server's certificate is not signed by [postgres] ca_file (or a public root): give the CA that signed it"),
        Some(TlsRefusal::Handshake) => Some("the TLS handshake with the server failed: check [postgres] sslmode, ca_file, cert_file and key_file against the server's ssl settings"),
        // tokio-postgres says this one in words only.
        None => err
            .to_string()
            .contains("server does not support TLS")
            .then_some("the server has ssl = off: enable TLS on it, or set [postgres] sslmode to prefer or disable"),
    }
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
            cause: crate::resource::describe(err),
        };
    }
    // Connect-phase failures without SQLSTATE (refused, timed out, DNS).
    let text = crate::resource::describe(err);
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
            "55P03", "28P01", "28000", "3D000",
        ] {
            assert!(is_transient(&SqlState::from_code(code)), "{code}");
        }
        for code in [
            "42601", "42P01", "23505", "22021", "22008", "57014", "25P02",
        ] {
            assert!(!is_transient(&SqlState::from_code(code)), "{code}");
        }
    }
}

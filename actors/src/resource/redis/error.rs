//! RedisActor's errors, and which driver errors count against the breaker.

use std::time::Duration;

use crate::resource::NotRunning;

/// What a RedisActor call can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RedisError {
    /// The circuit is open: refused without touching the network.
    #[error("redis circuit open for `{op}`; next probe in {retry_after:?}")]
    CircuitOpen {
        /// The operation.
        op: &'static str,
        /// Until the next probe may go.
        retry_after: Duration,
    },
    /// A connection-class failure (I/O, timeout, dropped connection, LOADING,
    /// BUSY, TRYAGAIN, MASTERDOWN); counted by the breaker.
    #[error("redis unreachable for `{op}`: {cause}")]
    Connection {
        /// The operation.
        op: &'static str,
        /// What happened.
        cause: String,
    },
    /// The server answered with an error (WRONGTYPE, NOGROUP, syntax, ...) or an
    /// unexpected reply; not the breaker's business.
    #[error("redis refused `{op}`{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Command {
        /// The operation.
        op: &'static str,
        /// The error code (`WRONGTYPE`, `NOGROUP`, ...).
        code: Option<String>,
        /// The server's message.
        message: String,
    },
    /// The actor is not running.
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
}

impl RedisError {
    /// A bounded name for the kind of failure, for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            RedisError::CircuitOpen { .. } => "circuit_open",
            RedisError::Connection { .. } => "connection",
            RedisError::Command { .. } => "command",
            RedisError::NotRunning(_) => "not_running",
        }
    }

    /// The server's error code, for command errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            RedisError::Command { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub(super) fn from_driver(op: &'static str, err: &redis::RedisError) -> Self {
        let codes = server_codes(err);
        if is_connection_class(err, &codes) {
            RedisError::Connection {
                op,
                cause: err.to_string(),
            }
        } else {
            RedisError::Command {
                op,
                code: codes.into_iter().next(),
                message: err.to_string(),
            }
        }
    }
}

/// The server's error codes: one for a plain reply, one per failed command of a
/// pipeline (whose own `code()` is empty).
fn server_codes(err: &redis::RedisError) -> Vec<String> {
    err.clone()
        .into_server_errors()
        .map(|items| items.iter().map(|(_, e)| e.code().to_owned()).collect())
        .unwrap_or_default()
}

/// Errors that say the server (or the way to it) is unwell, not the command.
fn is_connection_class(err: &redis::RedisError, codes: &[String]) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || codes
            .iter()
            .any(|c| matches!(c.as_str(), "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ErrorKind;

    #[test]
    fn io_errors_are_connection_class_and_parse_errors_are_not() {
        let io: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(matches!(
            RedisError::from_driver("x", &io),
            RedisError::Connection { .. }
        ));
        let parse: redis::RedisError = (ErrorKind::Parse, "bad reply").into();
        assert!(matches!(
            RedisError::from_driver("x", &parse),
            RedisError::Command { .. }
        ));
    }
}

//! RedisActor's errors, and which driver errors count against the breaker.

use std::time::Duration;

use crate::resource::NotRunning;

/// What a RedisActor call can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RedisError {
    /// The circuit is open: refused without touching the network.
    #[error("redis circuit open for `{op}`; next probe in {retry_after:?}")]
    CircuitOpen {
        /// The operation's name (`insert_trades`, `xadd_bulk`, ...).
        op: &'static str,
        /// Until the next probe may go.
        retry_after: Duration,
    },
    /// A connection-class failure (I/O, timeout, dropped connection, LOADING,
    /// BUSY, TRYAGAIN, MASTERDOWN); counted by the breaker.
    #[error("redis unreachable for `{op}`: {cause}")]
    Connection {
        /// The operation's name (`insert_trades`, `xadd_bulk`, ...).
        op: &'static str,
        /// What happened.
        cause: String,
    },
    /// The server answered with an error (WRONGTYPE, NOGROUP, syntax, ...) or an
    /// unexpected reply; not the breaker's business.
    #[error("redis refused `{op}`{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Command {
        /// The operation's name (`insert_trades`, `xadd_bulk`, ...).
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

impl crate::resource::CallError for RedisError {
    fn outage(&self) -> Option<Duration> {
        match self {
            RedisError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            RedisError::Connection { .. } | RedisError::NotRunning(_) => Some(Duration::ZERO),
            RedisError::Command { .. } => None,
        }
    }
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
                cause: crate::resource::describe(err),
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
/// Refused credentials count: no command can succeed until an operator fixes
/// them, and then every one can.
fn is_connection_class(err: &redis::RedisError, codes: &[String]) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || is_truncated_reply(err)
        || permanent_fix(err).is_some()
        || codes
            .iter()
            .any(|c| matches!(c.as_str(), "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN"))
}

/// A reply cut off when the connection died mid-reply: the async decoder
/// reports it as a parse error ("Unexpected end of input"), not as I/O, though
/// the command was fine and the connection is what broke.
fn is_truncated_reply(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Parse && err.to_string().contains("Unexpected end of input")
}

/// What to do about an error only an operator can fix (the server wants a
/// password, or refuses the one given), or `None`.
pub(super) fn permanent_fix(err: &redis::RedisError) -> Option<&'static str> {
    use crate::resource::TlsRefusal;
    match crate::resource::tls_refusal(err) {
        Some(TlsRefusal::WrongName) => return Some("the server's certificate is not for the host in [redis] url: connect by a name the certificate holds"),
        Some(TlsRefusal::Untrusted) => return Some("the server's certificate is not signed by [redis] ca_file (or a public root): give the CA that signed it"),
        Some(TlsRefusal::Handshake) => return Some("the TLS handshake with the server failed: check the rediss:// URL, [redis] ca_file, cert_file and key_file against the server's tls settings"),
        None => {}
    }
    let code = err.code().unwrap_or_default();
    let text = err.to_string();
    if code == "NOAUTH" || text.contains("NOAUTH") {
        Some("the server wants a password: set [redis] password, password_file or KEEL__REDIS__PASSWORD")
    } else if code == "WRONGPASS"
        || text.contains("WRONGPASS")
        || err.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("invalid password")
    {
        Some("check [redis] password (or password_file, KEEL__REDIS__PASSWORD) and the user in [redis] url")
    } else {
        None
    }
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

    #[test]
    fn a_reply_cut_off_by_a_dying_connection_is_connection_class() {
        // What the async decoder said when Redis was killed mid-reply (seen
        // in the flapping outage test).
        let cut: redis::RedisError = (
            ErrorKind::Parse,
            "Parse error",
            "Parse error at 0\nUnexpected end of input\nexpected 223 more elements\n".to_owned(),
        )
            .into();
        assert!(matches!(
            RedisError::from_driver("read_group", &cut),
            RedisError::Connection { .. }
        ));
    }
}

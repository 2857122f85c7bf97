//! Error codes and their messages, as Deribit's published error table lists
//! them and as the recorded frames in `tests/deribit-frames/` show them. Where
//! the research notes and a real frame disagreed (13009's message, -32600's), the
//! frame won.

/// Authentication needed (a private method without a token).
pub const AUTHORIZATION_REQUIRED: i64 = 10000;
/// The general error.
pub const ERROR: i64 = 10001;
/// Too many requests: the server closes the session after answering with it.
pub const TOO_MANY_REQUESTS: i64 = 10028;
/// A request the server cannot make sense of.
pub const BAD_REQUEST: i64 = 11050;
/// Wrong client id or secret, or a bad signature.
pub const INVALID_CREDENTIALS: i64 = 13004;
/// An expired or unknown access token, or a private call without one
/// (message `unauthorized`, as recorded).
pub const INVALID_TOKEN: i64 = 13009;
/// A `raw` channel on a connection that has not authenticated.
pub const RAW_SUBSCRIPTIONS_UNAUTHORIZED: i64 = 13778;
/// JSON-RPC: the frame is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object; also a frame over 32 kB, answered
/// without an id as [`REQUEST_TOO_LARGE`].
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: parameters missing or of the wrong type.
pub const INVALID_PARAMS: i64 = -32602;

/// The message of -32600 for a frame over [`MAX_REQUEST_BYTES`].
pub const REQUEST_TOO_LARGE: &str = "request entity too large";
/// The largest request frame Deribit reads.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024;

/// The message Deribit sends with `code`.
pub fn message(code: i64) -> &'static str {
    match code {
        AUTHORIZATION_REQUIRED => "authorization_required",
        ERROR => "error",
        INVALID_CREDENTIALS => "invalid_credentials",
        TOO_MANY_REQUESTS => "too_many_requests",
        BAD_REQUEST => "bad_request",
        INVALID_TOKEN => "unauthorized",
        RAW_SUBSCRIPTIONS_UNAUTHORIZED => "raw_subscriptions_not_available_for_unauthorized",
        PARSE_ERROR => "Parse error",
        INVALID_REQUEST => "Invalid Request",
        METHOD_NOT_FOUND => "Method not found",
        INVALID_PARAMS => "Invalid params",
        _ => "error",
    }
}

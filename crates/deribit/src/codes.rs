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
/// The order amount is below the instrument's minimum.
pub const QTY_TOO_LOW: i64 = 10002;
/// No order with that id or label.
pub const ORDER_NOT_FOUND: i64 = 10004;
/// The account cannot afford the order (final: do not retry).
pub const NOT_ENOUGH_FUNDS: i64 = 10009;
/// The order is already closed.
pub const ALREADY_CLOSED: i64 = 10010;
/// Too many open orders.
pub const MAX_OPEN_ORDERS: i64 = 10013;
/// No such instrument, or not tradable.
pub const INVALID_INSTRUMENT: i64 = 10020;
/// The amount is not valid (not a multiple of the contract size, ...).
pub const INVALID_AMOUNT: i64 = 10021;
/// The price is not valid.
pub const INVALID_PRICE: i64 = 10023;
/// Try again (transient).
pub const RETRY: i64 = 10040;
/// Settlement is running (transient).
pub const SETTLEMENT_IN_PROGRESS: i64 = 10041;
/// The price is not a multiple of the tick size.
pub const PRICE_WRONG_TICK: i64 = 10043;
/// The matching engine's queue is full (transient).
pub const MATCHING_ENGINE_QUEUE_FULL: i64 = 10047;
/// Cancel on disconnect could not be set.
pub const CANCEL_ON_DISCONNECT_FAILED: i64 = 10049;
/// The order is not open (filled or cancelled already): a final answer to a cancel.
pub const NOT_OPEN_ORDER: i64 = 11044;
/// Maintenance (transient).
pub const SYSTEM_MAINTENANCE: i64 = 11051;
/// A post-only order would have taken liquidity (with `reject_post_only`).
pub const POST_ONLY_REJECT: i64 = 11054;
/// An internal error (transient).
pub const INTERNAL_SERVER_ERROR: i64 = 11094;
/// A reduce-only order that would not reduce the position.
pub const REDUCE_ONLY_REJECT: i64 = 11030;
/// Temporarily unavailable (transient).
pub const TEMPORARILY_UNAVAILABLE: i64 = 13028;
/// A label-addressed operation found several orders with the label.
pub const NON_UNIQUE_ORDER_LABEL: i64 = 13032;
/// Cancel on disconnect is not enabled.
pub const COD_NOT_ENABLED: i64 = 13042;
/// The order could not start before its `valid_until`.
pub const TIMED_OUT: i64 = 13888;
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
        QTY_TOO_LOW => "qty_too_low",
        ORDER_NOT_FOUND => "order_not_found",
        NOT_ENOUGH_FUNDS => "not_enough_funds",
        ALREADY_CLOSED => "already_closed",
        MAX_OPEN_ORDERS => "pme_max_total_open_orders",
        INVALID_INSTRUMENT => "invalid_or_unsupported_instrument",
        INVALID_AMOUNT => "invalid_amount",
        INVALID_PRICE => "invalid_price",
        RETRY => "retry",
        SETTLEMENT_IN_PROGRESS => "settlement_in_progress",
        PRICE_WRONG_TICK => "price_wrong_tick",
        MATCHING_ENGINE_QUEUE_FULL => "matching_engine_queue_full",
        CANCEL_ON_DISCONNECT_FAILED => "cancel_on_disconnect_failed",
        NOT_OPEN_ORDER => "not_open_order",
        SYSTEM_MAINTENANCE => "system_maintenance",
        POST_ONLY_REJECT => "post_only_reject",
        INTERNAL_SERVER_ERROR => "internal_server_error",
        REDUCE_ONLY_REJECT => "other_reject",
        TEMPORARILY_UNAVAILABLE => "temporarily_unavailable",
        NON_UNIQUE_ORDER_LABEL => "non_unique_order_label",
        COD_NOT_ENABLED => "cod_not_enabled",
        TIMED_OUT => "timed_out",
        PARSE_ERROR => "Parse error",
        INVALID_REQUEST => "Invalid Request",
        METHOD_NOT_FOUND => "Method not found",
        INVALID_PARAMS => "Invalid params",
        _ => "error",
    }
}

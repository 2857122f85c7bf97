//! Faults the simulator injects on request (`POST /sim/faults`), and what it
//! counts of them.

use serde::{Deserialize, Serialize};

/// One fault. Each is logged and counted in `/sim/stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Close every connection.
    Disconnect,
    /// Send no data for `ms` while still answering requests and heartbeats (the
    /// silent stall that froze the old system's receiver). Trades keep being
    /// generated, so clients see a gap afterwards.
    Stall {
        /// For how long, in milliseconds.
        ms: u64,
    },
    /// Treat each connection's next answer to a `test_request` as missing, so the
    /// connection is closed at the next heartbeat interval, as Deribit closes an
    /// unresponsive client.
    IgnoreTestRequest,
    /// Send `count` garbage frames to every connection.
    Malformed {
        /// Frames.
        count: u32,
    },
    /// Apply one book change without publishing it, so subscribers see a
    /// `prev_change_id` that does not match (one instrument, or all).
    BookGap {
        /// Instrument, or every instrument.
        #[serde(default)]
        instrument: Option<String>,
    },
    /// Send the last `count` trades of each instrument again, as happens after a
    /// resubscribe.
    DuplicateTrades {
        /// Trades per instrument.
        count: u32,
    },
    /// Answer each connection's next request with 10028 and close it.
    RateLimit,
    /// Stop reading from every connection for `ms`.
    SlowConsumer {
        /// Duration.
        ms: u64,
    },
    /// Send no heartbeats (and expect no answers) on the open connections for
    /// `ms` while data keeps flowing: a server whose heartbeat timer died, which
    /// a client must notice by the heartbeats it misses.
    SilenceHeartbeats {
        /// Duration.
        ms: u64,
    },
    /// Execute the next `count` order requests (`buy`, `sell`, `edit*`) but
    /// never answer them: the order is placed, the client hears nothing but
    /// the `user.*` notifications.
    DropOrderAnswers {
        /// Requests.
        count: u32,
    },
    /// Execute the next `count` order requests at once and answer each `ms` later.
    DelayOrderAnswers {
        /// Delay.
        ms: u64,
        /// Requests.
        count: u32,
    },
    /// Refuse the next `count` order requests with error `code`, without
    /// executing them (10047 and 10040 are retryable, 10009 is final).
    RejectOrders {
        /// The Deribit error code.
        code: i64,
        /// Requests.
        count: u32,
    },
}

impl Fault {
    /// The name counted in `/sim/stats`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Disconnect => "disconnect",
            Fault::Stall { .. } => "stall",
            Fault::IgnoreTestRequest => "ignore_test_request",
            Fault::Malformed { .. } => "malformed",
            Fault::BookGap { .. } => "book_gap",
            Fault::DuplicateTrades { .. } => "duplicate_trades",
            Fault::RateLimit => "rate_limit",
            Fault::SlowConsumer { .. } => "slow_consumer",
            Fault::SilenceHeartbeats { .. } => "silence_heartbeats",
            Fault::DropOrderAnswers { .. } => "drop_order_answers",
            Fault::DelayOrderAnswers { .. } => "delay_order_answers",
            Fault::RejectOrders { .. } => "reject_orders",
        }
    }
}

/// What a connection must do now (sent to every session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Control {
    Disconnect,
    IgnoreTestRequest,
    Malformed(u32),
    RateLimit,
    SlowConsumer(u64),
    SilenceHeartbeats(u64),
}

/// The garbage frames `malformed` sends, round-robin: not JSON, JSON that is not
/// JSON-RPC, and JSON-RPC whose payload has the wrong types.
pub(super) const GARBAGE: &[&str] = &[
    "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\",\"params\":{\"channel\":",
    "not json at all",
    "[1,2,3]",
    "{\"jsonrpc\":\"2.0\"}",
    "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\",\"params\":{\"channel\":\"trades.BTC-PERPETUAL.raw\",\"data\":[{\"trade_seq\":\"seven\"}]}}",
    "{\"jsonrpc\":\"2.0\",\"method\":\"heartbeat\",\"params\":{\"type\":\"mystery\"}}",
];

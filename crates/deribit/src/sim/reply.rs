//! How the simulator answers a request, over HTTP and the WebSocket alike.

use serde_json::Value;

use crate::{codes, Id, Response, RpcError, Timing};

/// Microseconds since the epoch, as Deribit's timing fields count them.
pub(super) fn micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The answer to request `id`, which arrived at `us_in`, timed as Deribit
/// times its answers.
pub(super) fn timed(id: Id, us_in: u64, outcome: Result<Value, RpcError>) -> Response {
    let outcome = outcome.and_then(|value| {
        serde_json::value::to_raw_value(&value)
            .map_err(|e| RpcError::new(codes::BAD_REQUEST).because(e.to_string(), None))
    });
    let us_out = micros();
    Response {
        id,
        outcome,
        timing: Some(Timing {
            us_in,
            us_out,
            us_diff: us_out.saturating_sub(us_in),
            testnet: true,
        }),
    }
}

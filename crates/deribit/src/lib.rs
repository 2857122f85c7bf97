//! Deribit API v2 as Keel speaks it: JSON-RPC envelopes, channel names, error
//! codes and payloads, shared by the receiver (client) and `keel sim` (server).
//!
//! Parsing never panics: a malformed frame is a [`FrameError`].
#![warn(missing_docs, unreachable_pub)]

pub mod channel;
pub mod codes;
pub mod http;
mod jsonrpc;
pub mod model;
pub mod payload;
pub mod private;
mod scan;
pub mod sim;
pub mod tls;

pub use channel::{Channel, ChannelKind, Interval};
pub use jsonrpc::{
    parse_request, parse_server_frame, parse_subscription, raw_data, FrameError, Id, Notification,
    Request, Response, RpcError, ServerFrame, Timing,
};
pub use payload::{decode, decode_trades, read_trades, Payload, PayloadError, Texts};

#[cfg(test)]
mod tests;

//! JSON-RPC 2.0 envelopes as Deribit uses them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::codes;

/// A request id: any JSON value (numbers and strings such as `"auth_<uuid>"` are
/// common), echoed unchanged.
pub type Id = Value;

/// Why a frame could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON at all.
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a JSON-RPC message Keel knows.
    #[error("frame is not a JSON-RPC message: {0}")]
    Malformed(&'static str),
    /// A JSON-RPC message whose envelope has a field of the wrong type
    /// (`usIn` as a string, say).
    #[error("frame has a field of the wrong type: {0}")]
    WrongType(String),
}

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// Echoed in the response.
    pub id: Id,
    /// e.g. `public/subscribe`.
    pub method: String,
    /// Named parameters.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

impl Request {
    /// A request with named parameters.
    pub fn new(id: impl Into<Id>, method: &str, params: Value) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id: id.into(),
            method: method.into(),
            params,
        }
    }
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code} {message}")]
pub struct RpcError {
    /// Deribit or JSON-RPC code (see [`codes`]).
    pub code: i64,
    /// snake_case message.
    pub message: String,
    /// Details (`reason`, `param`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with the standard message for `code`.
    pub fn new(code: i64) -> Self {
        Self {
            code,
            message: codes::message(code).into(),
            data: None,
        }
    }

    /// Adds a reason (and the offending parameter, if any).
    pub fn because(mut self, reason: impl Into<String>, param: Option<&str>) -> Self {
        let mut data = serde_json::Map::new();
        data.insert("reason".into(), Value::String(reason.into()));
        if let Some(param) = param {
            data.insert("param".into(), Value::String(param.into()));
        }
        self.data = Some(Value::Object(data));
        self
    }
}

/// Server timing fields carried by every response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// When the request arrived (µs since the epoch).
    #[serde(rename = "usIn")]
    pub us_in: u64,
    /// When the response left (µs since the epoch).
    #[serde(rename = "usOut")]
    pub us_out: u64,
    /// `usOut - usIn`.
    #[serde(rename = "usDiff")]
    pub us_diff: u64,
    /// Whether this is a test network.
    pub testnet: bool,
}

/// A response to one request.
#[derive(Clone, Debug)]
pub struct Response {
    /// The request's id.
    pub id: Id,
    /// The result, or the error.
    pub outcome: Result<Box<RawValue>, RpcError>,
    /// Timing fields (Deribit always sends them).
    pub timing: Option<Timing>,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    jsonrpc: &'static str,
    // Deribit's HTTP responses carry no id; WebSocket ones echo the request's
    // (`null` for a request whose id could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RpcError>,
    #[serde(rename = "usIn", skip_serializing_if = "Option::is_none")]
    us_in: Option<u64>,
    #[serde(rename = "usOut", skip_serializing_if = "Option::is_none")]
    us_out: Option<u64>,
    #[serde(rename = "usDiff", skip_serializing_if = "Option::is_none")]
    us_diff: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    testnet: Option<bool>,
}

impl Response {
    /// The response as sent over a WebSocket.
    pub fn to_json(&self) -> String {
        self.encode(true)
    }

    /// The response as an HTTP body: the same, without an id.
    pub fn to_http_json(&self) -> String {
        self.encode(false)
    }

    fn encode(&self, with_id: bool) -> String {
        let (result, error) = match &self.outcome {
            Ok(result) => (Some(result.as_ref()), None),
            Err(error) => (None, Some(error)),
        };
        let out = ResponseOut {
            jsonrpc: "2.0",
            id: with_id.then_some(&self.id),
            result,
            error,
            us_in: self.timing.map(|t| t.us_in),
            us_out: self.timing.map(|t| t.us_out),
            us_diff: self.timing.map(|t| t.us_diff),
            testnet: self.timing.map(|t| t.testnet),
        };
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(&out).unwrap_or_default()
    }

    /// Whether the response names no request (no id, or `"id": null`): an
    /// error of this kind belongs to whichever request the server could not read.
    pub fn is_unaddressed(&self) -> bool {
        self.id.is_null()
    }

    /// The result decoded as `T`.
    pub fn result<T: serde::de::DeserializeOwned>(&self) -> Result<T, ResultError> {
        match &self.outcome {
            Ok(raw) => {
                serde_json::from_str(raw.get()).map_err(|e| ResultError::Shape(e.to_string()))
            }
            Err(error) => Err(ResultError::Rpc(error.clone())),
        }
    }
}

/// Why a response's result could not be had.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResultError {
    /// The server answered with an error.
    #[error("server error: {0}")]
    Rpc(RpcError),
    /// The result is not of the expected shape.
    #[error("unexpected result: {0}")]
    Shape(String),
}

/// A notification (a message without an id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `subscription` or `heartbeat`.
    pub method: String,
    /// The payload.
    pub params: Value,
}

/// Everything a Deribit server sends.
#[derive(Clone, Debug)]
pub enum ServerFrame {
    /// The answer to a request.
    Response(Response),
    /// Data on a subscribed channel; `data` is decoded by the channel's payload type.
    Subscription {
        /// The channel it arrived on (`trades.BTC-PERPETUAL.100ms`).
        channel: String,
        /// The undecoded payload.
        data: Box<RawValue>,
    },
    /// `heartbeat` with `type: heartbeat`.
    Heartbeat,
    /// `heartbeat` with `type: test_request`: answer with `public/test`.
    TestRequest,
    /// Any other notification.
    Other(Notification),
}

/// A field that is present counts, even as `null` (an error's `"id": null`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A frame as read: `params` and `result` borrow the frame's text, so a
/// notification's data is copied once, into the [`ServerFrame`], not once per
/// layer it is parsed through.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(default, deserialize_with = "present")]
    id: Option<Id>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
    // Spelled out: `flatten` cannot carry the RawValue fields above.
    #[serde(default, rename = "usIn")]
    us_in: Option<u64>,
    #[serde(default, rename = "usOut")]
    us_out: Option<u64>,
    #[serde(default, rename = "usDiff")]
    us_diff: Option<u64>,
    #[serde(default)]
    testnet: Option<bool>,
}

impl RawFrame<'_> {
    fn timing(&self) -> Option<Timing> {
        Some(Timing {
            us_in: self.us_in?,
            us_out: self.us_out?,
            us_diff: self.us_diff?,
            testnet: self.testnet?,
        })
    }
}

#[derive(Deserialize)]
struct RawSubscription<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct RawHeartbeat {
    #[serde(rename = "type")]
    kind: String,
}

/// Parses one text frame from a Deribit server.
pub fn parse_server_frame(text: &str) -> Result<ServerFrame, FrameError> {
    let frame: RawFrame = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            FrameError::WrongType(e.to_string())
        } else {
            FrameError::NotJson(e.to_string())
        }
    })?;
    let timing = frame.timing();
    // A response carries an id; Deribit's HTTP bodies and some WebSocket errors
    // (-32600 "request entity too large") carry none, and are still responses:
    // `Response::is_unaddressed` tells the caller to fail the request it can
    // belong to instead of letting it wait.
    let id = match frame.id {
        Some(id) => Some(id),
        None if frame.method.is_none() && (frame.result.is_some() || frame.error.is_some()) => {
            Some(Value::Null)
        }
        None => None,
    };
    if let Some(id) = id {
        let outcome = match (frame.result, frame.error) {
            (_, Some(error)) => Err(error),
            (Some(result), None) => Ok(result.to_owned()),
            (None, None) => {
                return Err(FrameError::Malformed("a response without result or error"))
            }
        };
        return Ok(ServerFrame::Response(Response {
            id,
            outcome,
            timing,
        }));
    }
    let method = frame
        .method
        .ok_or(FrameError::Malformed("neither id nor method"))?;
    let params = frame
        .params
        .ok_or(FrameError::Malformed("a notification without params"))?;
    match method.as_str() {
        "subscription" => {
            let sub: RawSubscription = serde_json::from_str(params.get())
                .map_err(|_| FrameError::Malformed("a subscription without channel and data"))?;
            Ok(ServerFrame::Subscription {
                channel: sub.channel,
                data: sub.data.to_owned(),
            })
        }
        "heartbeat" => {
            let beat: RawHeartbeat = serde_json::from_str(params.get())
                .map_err(|_| FrameError::Malformed("a heartbeat without type"))?;
            match beat.kind.as_str() {
                "heartbeat" => Ok(ServerFrame::Heartbeat),
                "test_request" => Ok(ServerFrame::TestRequest),
                _ => Err(FrameError::Malformed("an unknown heartbeat type")),
            }
        }
        _ => Ok(ServerFrame::Other(Notification {
            method,
            params: serde_json::from_str(params.get()).unwrap_or(Value::Null),
        })),
    }
}

/// A subscription notification's channel, and its data as `read_data` reads
/// it, in one pass over the frame, borrowing its text: the receiver's hot
/// path, where a frame holds thousands of trades. [`parse_server_frame`]
/// skims the params to find them, skims the data to copy it out, and the
/// caller then decodes it: three passes over the data where this makes one.
///
/// `read_data` gets the channel and the text from the data's first byte on,
/// reads one value and says how many bytes it took ([`raw_data`] skims it;
/// [`crate::read_trades`] decodes trades). It is called only when the channel
/// came before the data, as the exchange writes them.
///
/// `None` for any other frame, and for anything this read does not take
/// exactly as the general one would (an escape in a key, the method or the
/// channel, a duplicate field, an id, a result or an error, the data before
/// the channel, `read_data` declining): those go through
/// [`parse_server_frame`], which says what they are or what is wrong with them.
pub fn parse_subscription<'a, T>(
    text: &'a str,
    read_data: impl FnOnce(&'a str, &'a str) -> Option<(T, usize)>,
) -> Option<(&'a str, T)> {
    let mut scan = Scan { text, at: 0 };
    let mut read_data = Some(read_data);
    let (mut method, mut params, mut timing) = (None, None, [false; 4]);
    scan.object(|scan, key| {
        match key {
            "method" if method.is_none() => method = Some(scan.value::<&str>()?),
            "params" if params.is_none() => {
                let (mut channel, mut data) = (None, None);
                scan.object(|scan, key| {
                    match key {
                        "channel" if channel.is_none() => channel = Some(scan.value::<&str>()?),
                        "data" if data.is_none() => {
                            let rest = &scan.text[scan.ws()..];
                            let (value, len) = (read_data.take()?)(channel?, rest)?;
                            scan.at += len;
                            data = Some(value);
                        }
                        "channel" | "data" => return None,
                        _ => scan.skip()?,
                    }
                    Some(())
                })?;
                params = Some((channel?, data?));
            }
            "usIn" | "usOut" | "usDiff" | "testnet" => {
                let seen = &mut timing[match key {
                    "usIn" => 0,
                    "usOut" => 1,
                    "usDiff" => 2,
                    _ => 3,
                }];
                if std::mem::replace(seen, true) {
                    return None;
                }
                // Typed as the general read types them, so both call the
                // same frames malformed.
                if key == "testnet" {
                    scan.value::<Option<bool>>()?;
                } else {
                    scan.value::<Option<u64>>()?;
                }
            }
            // A response's fields, or a field read twice.
            "id" | "result" | "error" | "method" | "params" => return None,
            _ => scan.skip()?,
        }
        Some(())
    })?;
    if scan.ws() != text.len() || method != Some("subscription") {
        return None;
    }
    params
}

/// [`parse_subscription`]'s reader for data taken as it is: the value's text.
pub fn raw_data<'a>(_channel: &str, rest: &'a str) -> Option<(&'a str, usize)> {
    let mut scan = Scan { text: rest, at: 0 };
    scan.skip()?;
    Some((&rest[..scan.at], scan.at))
}

/// A cursor over a frame's text for [`parse_subscription`]: objects by hand,
/// every value by serde, so values are read exactly as the general parser
/// reads them.
struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    /// Skips JSON whitespace; returns the position.
    fn ws(&mut self) -> usize {
        self.at = crate::payload::skip_whitespace(self.text.as_bytes(), self.at);
        self.at
    }

    fn byte(&mut self) -> Option<u8> {
        let at = self.ws();
        self.text.as_bytes().get(at).copied()
    }

    /// One value of type `T` (borrowed strings fail on an escape).
    fn value<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let (value, len) = crate::payload::value_at(&self.text[self.ws()..])?.ok()?;
        self.at += len;
        Some(value)
    }

    fn skip(&mut self) -> Option<()> {
        self.value::<serde::de::IgnoredAny>().map(|_| ())
    }

    /// An object: `field` reads each key's value (the cursor after its `:`).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if self.byte()? != b'{' {
            return None;
        }
        self.at += 1;
        if self.byte()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            if self.byte()? != b'"' {
                return None;
            }
            let key = self.value::<&str>()?;
            if self.byte()? != b':' {
                return None;
            }
            self.at += 1;
            field(self, key)?;
            match self.byte()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Parses one request from a client; the error carries the id to answer with
/// (`null` when none could be read) and the JSON-RPC error to send.
pub fn parse_request(text: &str) -> Result<Request, (Id, RpcError)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Value::Null,
            RpcError::new(codes::PARSE_ERROR).because(e.to_string(), None),
        )
    })?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let invalid = |why: &str| {
        (
            id.clone(),
            RpcError::new(codes::INVALID_REQUEST).because(why, None),
        )
    };
    let object = value
        .as_object()
        .ok_or_else(|| invalid("a request must be an object"))?;
    if !object.contains_key("id") {
        return Err(invalid("a request must carry an id"));
    }
    let method = object
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a request must name a method"))?;
    let params = object.get("params").cloned().unwrap_or(Value::Null);
    if !(params.is_object() || params.is_null()) {
        return Err((
            id.clone(),
            RpcError::new(codes::INVALID_PARAMS)
                .because("params must be an object", Some("params")),
        ));
    }
    Ok(Request {
        jsonrpc: "2.0".into(),
        id,
        method: method.to_owned(),
        params,
    })
}

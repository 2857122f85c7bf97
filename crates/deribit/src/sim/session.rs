//! One WebSocket connection to the simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::account::{Selection, UserEvent};
use super::exchange::{Credits, Exchange, OrderFault, Tick};
use super::faults::{Control, GARBAGE};
use super::methods;
use super::params::Params;
use super::reply::{self, micros};
use super::trading;
use crate::model::to_ms;
use crate::private::{UserChannel, UserFeed, UserScope};
use crate::{codes, parse_request, Channel, Id, Interval, RpcError};

type Sink = SplitSink<WebSocket, Message>;

/// Why a session ends (for the log).
enum End {
    ClientLeft,
    Closed(&'static str),
}

/// Garbage frames sent at a time before the session looks at anything else.
const GARBAGE_CHUNK: u64 = 1000;

struct Session {
    exchange: Arc<Exchange>,
    /// Garbage frames a fault still wants sent, and how many were.
    garbage_left: u64,
    garbage_sent: u64,
    /// This connection's id (orders remember it for cancel on disconnect).
    id: u64,
    authenticated: bool,
    /// `user.*` channels.
    user_subs: BTreeSet<UserChannel>,
    /// Aggregated `user.*` channels: data items until the next 100 ms slot.
    user_pending: BTreeMap<String, Vec<Value>>,
    /// Cancel on disconnect: the scope, when enabled.
    cancel_on_disconnect: Option<&'static str>,
    /// `private/logout`: a graceful close, which cancels nothing.
    logged_out: bool,
    /// Answers held back by the delay fault: when each is due.
    delayed: std::collections::VecDeque<(tokio::time::Instant, String)>,
    /// The matching engine's budget, in requests.
    matching: Option<Credits>,
    subs: BTreeSet<Channel>,
    /// Aggregated trade channels: buffered JSON arrays until the next 100 ms slot.
    pending: BTreeMap<String, Vec<Arc<str>>>,
    /// Book channels: the last change id sent.
    book_sent: BTreeMap<String, i64>,
    heartbeat: Option<tokio::time::Interval>,
    awaiting_test: bool,
    ignore_next_test: bool,
    rate_limit_next: bool,
    /// Heartbeats are not sent (nor answers expected) until then (fault).
    heartbeats_silent_until: Option<tokio::time::Instant>,
    credits: Option<Credits>,
    /// `--replay`: the next recorded frame and when the recording started for
    /// this connection (at its first subscription to a recorded channel).
    replay: Option<(usize, tokio::time::Instant)>,
}

fn notification(channel: &str, data: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"subscription","params":{{"channel":"{channel}","data":{data}}}}}"#
    )
}

/// Serves one connection until the client leaves, a fault or a rule closes it,
/// or the simulator stops.
pub(super) async fn run(socket: WebSocket, exchange: Arc<Exchange>, stop: CancellationToken) {
    let counters = &exchange.counters;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = socket.split();
    let mut feed = exchange.feed.subscribe();
    let mut control = exchange.control.subscribe();
    let mut user_feed = exchange.user_feed.subscribe();
    let limits = &exchange.config.rate_limits;
    let mut session = Session {
        id: exchange.next_connection.fetch_add(1, Ordering::Relaxed),
        garbage_left: 0,
        garbage_sent: 0,
        user_subs: BTreeSet::new(),
        user_pending: BTreeMap::new(),
        cancel_on_disconnect: None,
        logged_out: false,
        delayed: std::collections::VecDeque::new(),
        matching: limits.enabled.then(|| Credits::matching(limits)),
        credits: limits.enabled.then(|| Credits::requests(limits)),
        exchange: Arc::clone(&exchange),
        authenticated: false,
        subs: BTreeSet::new(),
        pending: BTreeMap::new(),
        book_sent: BTreeMap::new(),
        heartbeat: None,
        awaiting_test: false,
        ignore_next_test: false,
        rate_limit_next: false,
        heartbeats_silent_until: None,
        replay: None,
    };
    let mut paused_until: Option<tokio::time::Instant> = None;
    let end = loop {
        let reading = paused_until.is_none();
        let replay_due = session.next_recorded();
        let answer_due = session.delayed.front().map(|(at, _)| *at);
        let step = tokio::select! {
            () = stop.cancelled() => Err(End::Closed("simulator stopping")),
            message = rx.next(), if reading => match message {
                Some(Ok(Message::Text(text))) => session.on_request(&mut tx, text.as_str(), &mut user_feed).await,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Err(End::ClientLeft),
                Some(Ok(_)) => Ok(()),
            },
            () = async { if let Some(at) = paused_until { tokio::time::sleep_until(at).await } else { std::future::pending().await } } => {
                paused_until = None;
                Ok(())
            }
            tick = feed.recv() => match tick {
                Ok(tick) => session.deliver(&mut tx, &tick).await,
                Err(RecvError::Lagged(missed)) => {
                    counters.closed_slow.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(missed, "Simulator client too slow; closing its connection.");
                    Err(End::Closed("client too slow"))
                }
                Err(RecvError::Closed) => Err(End::Closed("simulator stopping")),
            },
            order = control.recv() => match order {
                Ok(Control::Disconnect) => Err(End::Closed("disconnect fault")),
                Ok(Control::IgnoreTestRequest) => { session.ignore_next_test = true; Ok(()) }
                Ok(Control::RateLimit) => { session.rate_limit_next = true; Ok(()) }
                Ok(Control::SilenceHeartbeats(ms)) => {
                    session.heartbeats_silent_until =
                        Some(tokio::time::Instant::now() + Duration::from_millis(ms));
                    Ok(())
                }
                Ok(Control::SlowConsumer(ms)) => {
                    paused_until = Some(tokio::time::Instant::now() + Duration::from_millis(ms));
                    Ok(())
                }
                Ok(Control::Malformed(count)) => { session.garbage_left += u64::from(count); Ok(()) }
                Err(_) => Ok(()),
            },
            // Garbage goes out in chunks between everything else, so a long
            // burst still lets heartbeats through, as an exchange's would.
            () = std::future::ready(()), if session.garbage_left > 0 => session.garbage(&mut tx).await,
            () = async { match session.heartbeat.as_mut() { Some(h) => { h.tick().await; } None => std::future::pending().await } } => {
                session.on_heartbeat(&mut tx).await
            }
            () = async { match replay_due { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                session.play(&mut tx).await
            }
            event = user_feed.recv() => match event {
                Ok(event) => session.deliver_user(&mut tx, &event).await,
                Err(RecvError::Lagged(missed)) => {
                    counters.closed_slow.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(missed, "Simulator client too slow for its user channels; closing its connection.");
                    Err(End::Closed("client too slow"))
                }
                Err(RecvError::Closed) => Err(End::Closed("simulator stopping")),
            },
            () = async { match answer_due { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                match session.delayed.pop_front() {
                    Some((_, text)) => session.send(&mut tx, text).await,
                    None => Ok(()),
                }
            }
        };
        if let Err(end) = step {
            break end;
        }
    };
    if let End::Closed(why) = end {
        tracing::debug!(why, "Simulator closing a connection.");
        let _ = tx.send(Message::Close(None)).await;
    }
    counters.connections.fetch_sub(1, Ordering::Relaxed);
    counters.subscriptions.fetch_sub(
        session.subs.len() + session.user_subs.len(),
        Ordering::Relaxed,
    );
    for channel in &session.subs {
        counters.unfollowed(&channel.to_string());
    }
    if let (Some(scope), false) = (session.cancel_on_disconnect, session.logged_out) {
        let selection = Selection {
            connection: (scope == "connection").then_some(session.id),
            ..Selection::default()
        };
        let cancelled = exchange.cancel_selected(&selection, "cancel_on_disconnect");
        tracing::info!(
            connection = session.id,
            cancelled,
            "Simulator cancelled orders on disconnect."
        );
    }
}

impl Session {
    async fn send(&self, tx: &mut Sink, text: String) -> Result<(), End> {
        tx.send(Message::Text(text.into()))
            .await
            .map_err(|_| End::ClientLeft)
    }

    async fn reply(
        &self,
        tx: &mut Sink,
        id: Id,
        us_in: u64,
        outcome: Result<Value, RpcError>,
    ) -> Result<(), End> {
        let response = reply::timed(id, us_in, outcome);
        self.send(tx, response.to_json()).await
    }

    async fn on_request(
        &mut self,
        tx: &mut Sink,
        text: &str,
        user_feed: &mut tokio::sync::broadcast::Receiver<Arc<UserEvent>>,
    ) -> Result<(), End> {
        let us_in = micros();
        if text.len() > codes::MAX_REQUEST_BYTES {
            // As Deribit does: unread, so answered without an id.
            let too_large = Err(RpcError {
                code: codes::INVALID_REQUEST,
                message: codes::REQUEST_TOO_LARGE.into(),
                data: None,
            });
            let response = reply::timed(Value::Null, us_in, too_large);
            return self.send(tx, response.to_http_json()).await;
        }
        let request = match parse_request(text) {
            Ok(request) => request,
            Err((id, error)) => return self.reply(tx, id, us_in, Err(error)).await,
        };
        if self.rate_limit_next || !self.spend(&request.method) {
            self.exchange
                .counters
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            self.reply(
                tx,
                request.id,
                us_in,
                Err(RpcError::new(codes::TOO_MANY_REQUESTS)),
            )
            .await?;
            return Err(End::Closed("rate limit"));
        }
        if trading::is_matching_engine(&request.method) && !self.spend_matching() {
            self.exchange
                .counters
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            self.reply(
                tx,
                request.id,
                us_in,
                Err(RpcError::new(codes::TOO_MANY_REQUESTS)),
            )
            .await?;
            return Err(End::Closed("rate limit"));
        }
        let fault = if trading::is_order_entry(&request.method) && self.authorized(&request.params)
        {
            self.exchange.order_faults.lock().take()
        } else {
            OrderFault::None
        };
        if let OrderFault::Reject(code) = fault {
            return self
                .reply(tx, request.id, us_in, Err(RpcError::new(code)))
                .await;
        }
        let outcome = self.dispatch(&request.method, &request.params);
        let snapshots = match (&outcome, request.method.as_str()) {
            (Ok(_), "public/subscribe" | "private/subscribe") => self.snapshots(&request.params),
            _ => Vec::new(),
        };
        if request.method.starts_with("private/") {
            // What the call did reaches the `user.*` channels before its
            // answer, as it can on Deribit: clients must cope with it.
            while let Ok(event) = user_feed.try_recv() {
                self.deliver_user(tx, &event).await?;
            }
        }
        if request.method == "private/logout" {
            self.logged_out = true;
            return Err(End::Closed("logout"));
        }
        match fault {
            OrderFault::Drop => {
                tracing::debug!(method = %request.method, "Dropping an order answer (fault).");
                return Ok(());
            }
            OrderFault::Delay(ms) => {
                let text = reply::timed(request.id, us_in, outcome).to_json();
                let due = tokio::time::Instant::now() + Duration::from_millis(ms);
                self.delayed.push_back((due, text));
                return Ok(());
            }
            OrderFault::None | OrderFault::Reject(_) => {}
        }
        self.reply(tx, request.id, us_in, outcome).await?;
        for text in snapshots {
            self.send(tx, text).await?;
        }
        Ok(())
    }

    /// Takes one request from the matching engine's budget; false when it is spent.
    fn spend_matching(&mut self) -> bool {
        self.matching
            .as_mut()
            .is_none_or(|credits| credits.take(1.0))
    }

    /// Whether a private request may run: the connection authenticated, or
    /// the request carries a live access token.
    fn authorized(&self, params: &Value) -> bool {
        self.authenticated
            || Params(params)
                .opt_str("access_token")
                .ok()
                .flatten()
                .is_some_and(|t| self.exchange.tokens.lock().contains_key(t))
    }

    /// Takes the request's credits; false when there are not enough.
    fn spend(&mut self, method: &str) -> bool {
        let limits = &self.exchange.config.rate_limits;
        let cost = match method {
            "public/subscribe" | "private/subscribe" => limits.subscribe_cost,
            "public/get_instruments" => limits.instruments_cost,
            _ => limits.request_cost,
        };
        self.credits
            .as_mut()
            .is_none_or(|credits| credits.take(cost as f64))
    }

    fn dispatch(&mut self, method: &str, params: &Value) -> Result<Value, RpcError> {
        let p = Params(params);
        match method {
            "public/subscribe" => self.subscribe(params, false),
            "private/subscribe" => self.subscribe(params, true),
            "public/unsubscribe" | "private/unsubscribe" => {
                let mut removed = Vec::new();
                for name in p.strings("channels")? {
                    if let Ok(channel) = name.parse::<UserChannel>() {
                        if self.user_subs.remove(&channel) {
                            self.user_pending.remove(&name);
                            removed.push(name);
                        }
                    } else if let Ok(channel) = name.parse::<Channel>() {
                        if self.subs.remove(&channel) {
                            self.exchange.counters.unfollowed(&channel.to_string());
                            self.pending.remove(&name);
                            self.book_sent.remove(&name);
                            removed.push(name);
                        }
                    }
                }
                self.exchange
                    .counters
                    .subscriptions
                    .fetch_sub(removed.len(), Ordering::Relaxed);
                Ok(json!(removed))
            }
            "public/unsubscribe_all" | "private/unsubscribe_all" => {
                self.exchange
                    .counters
                    .subscriptions
                    .fetch_sub(self.subs.len() + self.user_subs.len(), Ordering::Relaxed);
                for channel in &self.subs {
                    self.exchange.counters.unfollowed(&channel.to_string());
                }
                self.subs.clear();
                self.user_subs.clear();
                self.user_pending.clear();
                self.pending.clear();
                self.book_sent.clear();
                Ok(json!("ok"))
            }
            "public/set_heartbeat" => {
                let secs = p.u64("interval")?;
                let min = self.exchange.config.min_heartbeat.as_secs().max(1);
                if secs < min {
                    return Err(RpcError::new(codes::INVALID_PARAMS).because(
                        format!("interval must be at least {min} seconds"),
                        Some("interval"),
                    ));
                }
                let period = Duration::from_secs(secs);
                self.heartbeat = Some(tokio::time::interval_at(
                    tokio::time::Instant::now() + period,
                    period,
                ));
                self.awaiting_test = false;
                Ok(json!("ok"))
            }
            "public/disable_heartbeat" => {
                self.heartbeat = None;
                self.awaiting_test = false;
                Ok(json!("ok"))
            }
            "public/test" => {
                if std::mem::take(&mut self.ignore_next_test) {
                    tracing::debug!("Ignoring a test_request answer (fault).");
                } else {
                    self.awaiting_test = false;
                }
                methods::call(&self.exchange, method, params).unwrap_or(Ok(Value::Null))
            }
            "public/auth" => {
                let result =
                    methods::call(&self.exchange, method, params).unwrap_or(Ok(Value::Null));
                if result.is_ok() {
                    self.authenticated = true;
                }
                result
            }
            private if private.starts_with("private/") => {
                if !self.authorized(params) {
                    return Err(RpcError {
                        code: codes::INVALID_TOKEN,
                        message: "unauthorized".into(),
                        data: None,
                    });
                }
                self.private(method, params)
            }
            _ => methods::call(&self.exchange, method, params).unwrap_or_else(|| {
                // As Deribit: the code and message, no details.
                Err(RpcError::new(codes::METHOD_NOT_FOUND))
            }),
        }
    }

    /// The private methods of an authorized request: cancel on disconnect
    /// (this connection's), logout, and the account's.
    fn private(&mut self, method: &str, params: &Value) -> Result<Value, RpcError> {
        let p = Params(params);
        let scope = || -> Result<&'static str, RpcError> {
            match p.opt_str("scope")?.unwrap_or("connection") {
                "connection" => Ok("connection"),
                "account" => Ok("account"),
                _ => Err(RpcError::new(codes::INVALID_PARAMS)
                    .because("scope must be connection or account", Some("scope"))),
            }
        };
        match method {
            "private/enable_cancel_on_disconnect" => {
                self.cancel_on_disconnect = Some(scope()?);
                Ok(json!("ok"))
            }
            "private/disable_cancel_on_disconnect" => {
                scope()?;
                self.cancel_on_disconnect = None;
                Ok(json!("ok"))
            }
            "private/get_cancel_on_disconnect" => {
                let asked = scope()?;
                Ok(json!({
                    "scope": asked,
                    "enabled": self.cancel_on_disconnect == Some(asked),
                }))
            }
            "private/logout" => Ok(json!("ok")),
            _ => trading::call(&self.exchange, self.id, method, params)
                .unwrap_or_else(|| Err(RpcError::new(codes::METHOD_NOT_FOUND))),
        }
    }

    /// Subscribes to `user.*` channels (the connection must be authorized).
    fn subscribe_user(&mut self, name: &str) -> Result<Option<UserChannel>, RpcError> {
        if !name.starts_with("user.") {
            return Ok(None);
        }
        let channel: UserChannel = name.parse().map_err(|e: crate::private::NotAUserChannel| {
            RpcError::new(codes::INVALID_PARAMS).because(e.to_string(), Some("channels"))
        })?;
        if let UserScope::Instrument(instrument) = &channel.scope {
            if self.exchange.instrument(instrument).is_none() {
                return Err(RpcError::new(codes::INVALID_PARAMS)
                    .because(format!("unknown instrument in `{name}`"), Some("channels")));
            }
        }
        if !self.authenticated {
            return Err(RpcError {
                code: codes::INVALID_TOKEN,
                message: "unauthorized".into(),
                data: None,
            });
        }
        Ok(Some(channel))
    }

    /// Sends (or buffers, on aggregated channels) what an account event means
    /// to each `user.*` channel this connection follows. Raw `user.orders`
    /// carry one order object per notification, `user.trades` an array, and
    /// `user.changes` one object, as the recorded frames show.
    async fn deliver_user(&mut self, tx: &mut Sink, event: &UserEvent) -> Result<(), End> {
        if self.user_subs.is_empty() {
            return Ok(());
        }
        let name = &self.exchange.names[event.instrument];
        let info = self.exchange.info(event.instrument);
        let mut out = Vec::new();
        for channel in &self.user_subs {
            if !channel.covers(name, &info.kind, &info.base_currency) {
                continue;
            }
            let channel_name = channel.to_string();
            let items: Vec<Value> = match channel.feed {
                UserFeed::Orders => event
                    .orders
                    .iter()
                    .filter_map(|o| serde_json::to_value(o).ok())
                    .collect(),
                UserFeed::Trades if event.trades.is_empty() => continue,
                UserFeed::Trades => event
                    .trades
                    .iter()
                    .filter_map(|t| serde_json::to_value(t).ok())
                    .collect(),
                UserFeed::Changes => vec![json!({
                    "instrument_name": name,
                    "orders": event.orders,
                    "trades": event.trades,
                    "positions": [event.position],
                })],
            };
            if channel.interval != Interval::Raw {
                self.user_pending
                    .entry(channel_name)
                    .or_default()
                    .extend(items);
                continue;
            }
            match channel.feed {
                UserFeed::Orders | UserFeed::Changes => {
                    for item in items {
                        out.push(notification(&channel_name, &item.to_string()));
                    }
                }
                UserFeed::Trades => {
                    out.push(notification(
                        &channel_name,
                        &Value::Array(items).to_string(),
                    ));
                }
            }
        }
        for text in out {
            self.send(tx, text).await?;
        }
        Ok(())
    }

    /// The aggregated `user.*` notifications of the slot that ended.
    fn flush_user(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, items) in std::mem::take(&mut self.user_pending) {
            if items.is_empty() {
                continue;
            }
            let data = if name.starts_with("user.changes.") {
                // One object: the slot's orders, trades and positions together.
                let mut merged = json!({"orders": [], "trades": [], "positions": []});
                for item in items {
                    for key in ["orders", "trades", "positions"] {
                        if let (Some(to), Some(Value::Array(from))) = (
                            merged.get_mut(key).and_then(Value::as_array_mut),
                            item.get(key),
                        ) {
                            to.extend(from.iter().cloned());
                        }
                    }
                    if let (Some(name), Some(m)) =
                        (item.get("instrument_name"), merged.as_object_mut())
                    {
                        m.insert("instrument_name".into(), name.clone());
                    }
                }
                merged
            } else {
                Value::Array(items)
            };
            out.push(notification(&name, &data.to_string()));
        }
        out
    }

    fn subscribe(&mut self, params: &Value, private: bool) -> Result<Value, RpcError> {
        let p = Params(params);
        if private && !self.authenticated {
            let by_token = p
                .opt_str("access_token")?
                .is_some_and(|t| self.exchange.tokens.lock().contains_key(t));
            if !by_token {
                return Err(RpcError {
                    code: codes::INVALID_TOKEN,
                    message: "unauthorized".into(),
                    data: None,
                });
            }
            self.authenticated = true;
        }
        let names = p.strings("channels")?;
        let mut channels = Vec::with_capacity(names.len());
        let mut user = Vec::new();
        for name in &names {
            if let Some(channel) = self.subscribe_user(name)? {
                user.push(channel);
                continue;
            }
            let channel: Channel = name.parse().map_err(|e: crate::channel::BadChannel| {
                RpcError::new(codes::INVALID_PARAMS).because(e.to_string(), Some("channels"))
            })?;
            if self.exchange.instrument(channel.instrument()).is_none() {
                return Err(RpcError::new(codes::INVALID_PARAMS)
                    .because(format!("unknown instrument in `{name}`"), Some("channels")));
            }
            if channel.is_raw() && !self.authenticated {
                return Err(
                    // As recorded: the code and message, no details.
                    RpcError::new(codes::RAW_SUBSCRIPTIONS_UNAUTHORIZED),
                );
            }
            channels.push(channel);
        }
        let mut added = 0;
        for channel in channels {
            let name = channel.to_string();
            if self.subs.insert(channel) {
                self.exchange.counters.followed(name);
                added += 1;
            }
        }
        for channel in user {
            if self.user_subs.insert(channel) {
                added += 1;
            }
        }
        self.exchange
            .counters
            .subscriptions
            .fetch_add(added, Ordering::Relaxed);
        Ok(json!(names))
    }

    /// The first message of each newly subscribed book channel: a snapshot.
    /// When the next recorded frame is due (none without a recording this
    /// connection follows, or at its end).
    fn next_recorded(&self) -> Option<tokio::time::Instant> {
        match (&self.exchange.recording, self.replay) {
            (Some(recording), Some((next, started))) => {
                recording.frames.get(next).map(|frame| started + frame.due)
            }
            _ => None,
        }
    }

    /// Sends every recorded frame now due on a channel this connection follows.
    async fn play(&mut self, tx: &mut Sink) -> Result<(), End> {
        let Some(recording) = self.exchange.recording.clone() else {
            return Ok(());
        };
        let Some((mut next, started)) = self.replay else {
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        while let Some(frame) = recording.frames.get(next) {
            if started + frame.due > now {
                break;
            }
            next += 1;
            if self
                .subs
                .iter()
                .any(|s| super::replay::serves(s, &frame.channel))
            {
                self.exchange
                    .counters
                    .notifications
                    .fetch_add(1, Ordering::Relaxed);
                self.send(tx, frame.text.clone()).await?;
            }
        }
        self.replay = Some((next, started));
        Ok(())
    }

    /// Starts this connection's replay at its first subscription to a recorded channel.
    fn start_replay(&mut self) {
        let Some(recording) = &self.exchange.recording else {
            return;
        };
        if self.replay.is_none()
            && recording.frames.iter().any(|f| {
                self.subs
                    .iter()
                    .any(|s| super::replay::serves(s, &f.channel))
            })
        {
            self.replay = Some((0, tokio::time::Instant::now()));
        }
    }

    fn snapshots(&mut self, params: &Value) -> Vec<String> {
        if self.exchange.recording.is_some() {
            // Books come from the recording, its snapshots included.
            self.start_replay();
            return Vec::new();
        }
        let Ok(names) = Params(params).strings("channels") else {
            return Vec::new();
        };
        let now = to_ms(std::time::SystemTime::now());
        let mut out = Vec::new();
        for name in names {
            let Ok(Channel::Book { instrument, .. }) = name.parse::<Channel>() else {
                continue;
            };
            let Some(i) = self.exchange.instrument(&instrument) else {
                continue;
            };
            if self.book_sent.contains_key(&name) {
                continue;
            }
            let snapshot = self.exchange.venues[i].lock().market.book_snapshot(now);
            self.book_sent.insert(name.clone(), snapshot.change_id);
            if let Ok(data) = serde_json::to_string(&snapshot) {
                out.push(notification(&name, &data));
            }
        }
        out
    }

    async fn on_heartbeat(&mut self, tx: &mut Sink) -> Result<(), End> {
        if self
            .heartbeats_silent_until
            .is_some_and(|until| tokio::time::Instant::now() < until)
        {
            self.awaiting_test = false;
            return Ok(());
        }
        if self.awaiting_test {
            tracing::info!("Simulator client missed a test_request; closing, as Deribit does.");
            return Err(End::Closed("test_request not answered"));
        }
        self.awaiting_test = true;
        self.send(
            tx,
            r#"{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}"#.into(),
        )
        .await
    }

    /// Sends the next chunk of the garbage frames a fault asked for.
    async fn garbage(&mut self, tx: &mut Sink) -> Result<(), End> {
        let chunk = self.garbage_left.min(GARBAGE_CHUNK);
        for _ in 0..chunk {
            let text = GARBAGE[(self.garbage_sent % GARBAGE.len() as u64) as usize];
            self.garbage_sent += 1;
            self.send(tx, text.into()).await?;
        }
        self.garbage_left -= chunk;
        Ok(())
    }

    /// Sends what this connection subscribed to from one engine tick.
    async fn deliver(&mut self, tx: &mut Sink, tick: &Tick) -> Result<(), End> {
        // A replaying simulator serves the recording only.
        if tick.slot && !self.user_pending.is_empty() {
            for text in self.flush_user() {
                self.send(tx, text).await?;
            }
        }
        if self.subs.is_empty() || self.exchange.recording.is_some() {
            return Ok(());
        }
        let now = to_ms(std::time::SystemTime::now());
        let stalled = now < self.exchange.stall_until_ms.load(Ordering::Acquire);
        let names = &self.exchange.names;
        let mut out: Vec<String> = Vec::new();
        for (i, trades) in &tick.trades {
            for channel in &self.subs {
                if let Channel::Trades {
                    instrument,
                    interval,
                } = channel
                {
                    if instrument != &names[*i] || stalled {
                        continue;
                    }
                    let name = channel.to_string();
                    if *interval == Interval::Raw {
                        out.push(notification(&name, trades));
                    } else {
                        self.pending
                            .entry(name)
                            .or_default()
                            .push(Arc::clone(trades));
                    }
                }
            }
        }
        for (i, change_id, change) in &tick.books {
            for channel in &self.subs {
                if let Channel::Book { instrument, .. } = channel {
                    if instrument != &names[*i] || stalled {
                        continue;
                    }
                    let name = channel.to_string();
                    let last = self.book_sent.entry(name.clone()).or_insert(0);
                    if change_id > last {
                        *last = *change_id;
                        out.push(notification(&name, change));
                    }
                }
            }
        }
        if tick.slot {
            if stalled {
                self.pending.clear();
            }
            for (name, chunks) in std::mem::take(&mut self.pending) {
                let joined: Vec<&str> = chunks
                    .iter()
                    .map(|c| c.trim_start_matches('[').trim_end_matches(']'))
                    .collect();
                out.push(notification(&name, &format!("[{}]", joined.join(","))));
            }
            if !stalled {
                out.extend(self.slot_updates(now));
            }
        }
        let sent = out.len() as u64;
        for text in out {
            tx.feed(Message::Text(text.into()))
                .await
                .map_err(|_| End::ClientLeft)?;
        }
        tx.flush().await.map_err(|_| End::ClientLeft)?;
        self.exchange
            .counters
            .notifications
            .fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }

    /// Tickers, quotes, grouped books and chart bars: sent every 100 ms slot.
    fn slot_updates(&self, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for channel in &self.subs {
            let Some(i) = self.exchange.instrument(channel.instrument()) else {
                continue;
            };
            let data = match channel {
                Channel::Ticker { .. } => {
                    serde_json::to_string(&methods::ticker(&self.exchange, i))
                }
                Channel::Quote { .. } => serde_json::to_string(&methods::quote(&self.exchange, i)),
                Channel::BookGrouped { depth, .. } => serde_json::to_string(
                    &self.exchange.venues[i]
                        .lock()
                        .market
                        .grouped(*depth as usize, now),
                ),
                Channel::ChartTrades { resolution, .. } => {
                    let step = if resolution == "1D" {
                        86_400_000
                    } else {
                        resolution.parse::<u64>().unwrap_or(1) * 60_000
                    };
                    let bucket = now - now % step;
                    let chart = self.exchange.venues[i]
                        .lock()
                        .history
                        .chart(bucket, now, step);
                    let bar = chart.ticks.first().map(|&tick| crate::model::ChartBar {
                        tick,
                        open: chart.open[0],
                        high: chart.high[0],
                        low: chart.low[0],
                        close: chart.close[0],
                        volume: chart.volume[0],
                        cost: chart.cost[0],
                    });
                    match bar {
                        Some(bar) => serde_json::to_string(&bar),
                        None => continue,
                    }
                }
                Channel::Trades { .. } | Channel::Book { .. } => continue,
            };
            if let Ok(data) = data {
                out.push(notification(&channel.to_string(), &data));
            }
        }
        out
    }
}

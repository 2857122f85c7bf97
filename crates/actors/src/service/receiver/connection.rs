//! One connection to the exchange: handshake, subscriptions, and a read loop
//! that never waits on downstream work. It returns why it ended; the receiver
//! then fails and the supervisor reconnects with backoff.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::continuity::{Continuity, Verdict};
use super::outbox::{Outbox, Pending};
use super::validate::Gate;
use super::ReceiverConfig;
use keel_core::logs::Repeats;
use keel_core::registry::Probe;
use keel_deribit::channel::subscribe_batches;
use keel_deribit::model::{BookUpdate, TradeView};
use keel_deribit::{
    decode, decode_trades, parse_server_frame, parse_subscription, raw_data, read_trades, Channel,
    ChannelKind, Interval, Payload, Request, ServerFrame, Texts,
};

/// Counters shown in the registry.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) frames: AtomicU64,
    pub(super) trades: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) gaps: AtomicU64,
    pub(super) book_resyncs: AtomicU64,
    pub(super) last_data_ms: AtomicU64,
    pub(super) binary: AtomicU64,
    pub(super) unknown_channels: AtomicU64,
    /// Whether publishing is held back now: a consumer group is
    /// `max_backlog` entries behind.
    pub(super) backlog_full: std::sync::atomic::AtomicBool,
    /// Times publishing was held back so.
    pub(super) backlog_holds: AtomicU64,
}

/// The receiver's repeating warnings, each bounded (see [`keel_core::logs`]).
#[derive(Debug, Default)]
pub(super) struct Logs {
    pub(super) malformed: Repeats,
    pub(super) rejected: Repeats,
    pub(super) gaps: Repeats,
    pub(super) dropped: Repeats,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The exchange went away, went silent or stopped reading: an outage of the
    /// exchange, not the receiver's failure.
    Lost(String),
    /// The exchange refused a request (a subscription, the credentials): a
    /// reconnect repeats it, so it counts as the receiver's failure.
    Refused(String),
}

impl From<String> for Ended {
    fn from(reason: String) -> Self {
        Ended::Lost(reason)
    }
}

impl From<&str> for Ended {
    fn from(reason: &str) -> Self {
        Ended::Lost(reason.to_owned())
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Lost(reason) | Ended::Refused(reason) => f.write_str(reason),
        }
    }
}

/// Answers queued for the writer; a full queue means the socket is stuck.
const WRITE_QUEUE: usize = 256;

/// How long a close handshake may take before the socket is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub(super) struct Connection {
    pub(super) config: ReceiverConfig,
    pub(super) outbox: Arc<Outbox>,
    pub(super) continuity: Continuity,
    pub(super) gate: Arc<Gate>,
    pub(super) counters: Arc<Counters>,
    pub(super) logs: Arc<Logs>,
    pub(super) probe: Probe,
    /// Cluster mode: the instruments this instance holds leases for, which
    /// are the ones it subscribes to; `None`: every configured instrument.
    pub(super) owned: Option<watch::Receiver<BTreeSet<String>>>,
}

/// Resolves when the owned instruments change; never without a lease set.
async fn owned_changed(owned: &mut Option<watch::Receiver<BTreeSet<String>>>) {
    let changed = match owned {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

fn request(id: u64, method: &str, params: Value) -> String {
    serde_json::to_string(&Request::new(id, method, params)).unwrap_or_default()
}

impl Connection {
    fn channels(&self, instruments: &[String]) -> Vec<String> {
        let trades = instruments.iter().map(|instrument| Channel::Trades {
            instrument: instrument.clone(),
            interval: self.config.interval,
        });
        let books = instruments.iter().map(|instrument| Channel::Book {
            instrument: instrument.clone(),
            interval: Interval::Ms100,
        });
        let books = books.take(if self.config.book {
            instruments.len()
        } else {
            0
        });
        trades.chain(books).map(|c| c.to_string()).collect()
    }

    /// Runs until the connection fails (the reason) or `stop` fires (`Ok`).
    pub(super) async fn run(&self, stop: CancellationToken) -> Result<(), Ended> {
        let cfg = &self.config;
        let tls = keel_deribit::tls::client_config(cfg.ca_file.as_deref())
            .map_err(|e| Ended::Refused(format!("TLS configuration: {e}")))?;
        let (ws, _) = timeout(
            cfg.connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(
                cfg.url.as_str(),
                None,
                // No Nagle: a request goes out at once, not held until the
                // exchange acknowledges the one before.
                true,
                Some(tokio_tungstenite::Connector::Rustls(tls)),
            ),
        )
        .await
        .map_err(|_| {
            format!(
                "no connection to {} within {:?}",
                cfg.url, cfg.connect_timeout
            )
        })?
        .map_err(|e| format!("cannot connect to {}: {e}", cfg.url))?;
        let (mut sink, mut source) = ws.split();
        let (to_writer, mut writer_queue) = mpsc::channel::<String>(WRITE_QUEUE);
        // Owned by this connection: aborted with it, so it never outlives it.
        let writer = AbortOnDropHandle::new(tokio::spawn(async move {
            while let Some(text) = writer_queue.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            // A peer that never acknowledges the close must not hold us.
            let _ = timeout(CLOSE_WAIT, sink.close()).await;
        }));
        let result = self.session(&mut source, &to_writer, stop).await;
        drop(to_writer);
        let _ = timeout(CLOSE_WAIT * 2, writer).await;
        result
    }

    async fn session<S>(
        &self,
        source: &mut S,
        out: &mpsc::Sender<String>,
        stop: CancellationToken,
    ) -> Result<(), Ended>
    where
        S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        let cfg = &self.config;
        let send = |text: String| {
            out.try_send(text)
                .map_err(|_| "the socket stopped taking writes".to_owned())
        };
        let mut next_id = 1u64;
        let mut expect: HashMap<u64, &'static str> = HashMap::new();
        let mut ask =
            |method: &'static str, params: Value, expect: &mut HashMap<u64, &'static str>| {
                let id = next_id;
                next_id += 1;
                expect.insert(id, method);
                send(request(id, method, params))
            };
        ask(
            "public/hello",
            json!({"client_name": "keel", "client_version": env!("CARGO_PKG_VERSION")}),
            &mut expect,
        )?;
        ask(
            "public/set_heartbeat",
            json!({"interval": cfg.heartbeat.as_secs()}),
            &mut expect,
        )?;
        if let (Some(id), Some(secret)) = (&cfg.client_id, &cfg.client_secret) {
            ask(
                "public/auth",
                json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret.expose()}),
                &mut expect,
            )?;
        }
        let (subscribe, unsubscribe) = if cfg.client_id.is_some() {
            ("private/subscribe", "private/unsubscribe")
        } else {
            ("public/subscribe", "public/unsubscribe")
        };
        let mut owned = self.owned.clone();
        let mut subscribed: Vec<String> = match &mut owned {
            Some(rx) => rx.borrow_and_update().iter().cloned().collect(),
            None => cfg.instruments.clone(),
        };
        for channels in subscribe_batches(self.channels(&subscribed)) {
            ask(subscribe, json!({ "channels": channels }), &mut expect)?;
        }
        self.probe.set_detail("subscriptions", subscribed.len());
        self.probe.set_detail("connection", "subscribing");

        let now = Instant::now();
        let mut data_deadline = later(now, cfg.connect_timeout.saturating_add(cfg.stall_timeout));
        let mut beat_deadline = later(
            now,
            cfg.connect_timeout
                .saturating_add(cfg.heartbeat.saturating_mul(2)),
        );
        let mut books: HashMap<String, i64> = HashMap::new();
        loop {
            let frame = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                // Nothing subscribed (cluster mode, every lease elsewhere): no data is due.
                () = sleep_until(data_deadline), if !subscribed.is_empty() => return Err(format!("no data for {:?}", cfg.stall_timeout).into()),
                () = sleep_until(beat_deadline) => return Err("missed heartbeats".into()),
                () = owned_changed(&mut owned) => {
                    let now: Vec<String> = owned
                        .as_mut()
                        .map(|rx| rx.borrow_and_update().iter().cloned().collect())
                        .unwrap_or_default();
                    let gone: Vec<String> =
                        subscribed.iter().filter(|i| !now.contains(i)).cloned().collect();
                    let new: Vec<String> =
                        now.iter().filter(|i| !subscribed.contains(i)).cloned().collect();
                    if !gone.is_empty() {
                        for channels in subscribe_batches(self.channels(&gone)) {
                            ask(unsubscribe, json!({ "channels": channels }), &mut expect)?;
                        }
                    }
                    if !new.is_empty() {
                        if subscribed.is_empty() {
                            data_deadline = later(
                                Instant::now(),
                                cfg.connect_timeout.saturating_add(cfg.stall_timeout),
                            );
                        }
                        for channels in subscribe_batches(self.channels(&new)) {
                            ask(subscribe, json!({ "channels": channels }), &mut expect)?;
                        }
                    }
                    tracing::info!(subscribed = ?now, dropped = ?gone, added = ?new, "Receiving the instruments whose leases this instance holds.");
                    subscribed = now;
                    self.probe.set_detail("subscriptions", subscribed.len());
                    continue;
                }
                frame = source.next() => frame,
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => {
                    return Err("the exchange closed the connection".into())
                }
                Some(Err(e)) => return Err(format!("connection lost: {e}").into()),
                Some(Ok(Message::Binary(_))) => {
                    // Deribit sends text only; count what it should not send.
                    self.counters.binary.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            self.counters.frames.fetch_add(1, Ordering::Relaxed);
            // Nearly every frame is a notification: read in one pass, borrowed.
            // Trades are decoded where they stand in the frame.
            let read = |channel: &str, rest| {
                if ChannelKind::of(channel) == Some(ChannelKind::Trades) {
                    read_trades(rest).map(|(trades, len)| (Data::Trades(trades), len))
                } else {
                    raw_data(channel, rest).map(|(data, len)| (Data::Text(data), len))
                }
            };
            if let Some((channel, data)) = parse_subscription(text.as_str(), read) {
                data_deadline = later(Instant::now(), cfg.stall_timeout);
                self.on_data(channel, data, &Bytes::from(text.clone()), &mut books, &send)?;
                continue;
            }
            let frame = match parse_server_frame(text.as_str()) {
                Ok(frame) => frame,
                Err(error) => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    self.logs.malformed.warn(|suppressed| {
                        tracing::warn!(%error, suppressed, "Malformed frame from the exchange; ignored.");
                    });
                    continue;
                }
            };
            match frame {
                ServerFrame::TestRequest | ServerFrame::Heartbeat => {
                    beat_deadline = later(Instant::now(), cfg.heartbeat.saturating_mul(2));
                    if matches!(frame, ServerFrame::TestRequest) {
                        send(request(0, "public/test", json!({})))?;
                    }
                }
                ServerFrame::Response(response) => {
                    let id = addressee(&response, &expect);
                    if let (Some(method), Err(error)) = (expect.remove(&id), &response.outcome) {
                        return Err(Ended::Refused(format!("{method} refused: {error}")));
                    }
                    if expect.is_empty() {
                        self.probe.set_detail("connection", "streaming");
                    }
                }
                ServerFrame::Subscription { channel, data } => {
                    data_deadline = later(Instant::now(), cfg.stall_timeout);
                    // The data is a copy: its trades' texts are copied out.
                    let frame = Bytes::new();
                    self.on_data(&channel, Data::Text(data.get()), &frame, &mut books, &send)?;
                }
                ServerFrame::Other(_) => {}
            }
        }
    }

    /// A notification's data: trades are checked and buffered, book changes
    /// checked for continuity (a resubscription asked on a gap).
    fn on_data(
        &self,
        channel: &str,
        data: Data<'_>,
        frame: &Bytes,
        books: &mut HashMap<String, i64>,
        send: &impl Fn(String) -> Result<(), String>,
    ) -> Result<(), String> {
        self.counters.last_data_ms.store(
            keel_deribit::model::to_ms(std::time::SystemTime::now()),
            Ordering::Relaxed,
        );
        // Trades keep the exchange's text for each trade, which is what gets
        // published; every other payload is decoded whole.
        let payload = match data {
            Data::Trades(trades) => {
                self.on_trades(channel, &trades, frame);
                Ok(None)
            }
            Data::Text(data) if ChannelKind::of(channel) == Some(ChannelKind::Trades) => {
                decode_trades(channel, data).map(|trades| {
                    self.on_trades(channel, &trades, frame);
                    None
                })
            }
            Data::Text(data) => decode(channel, data).map(Some),
        };
        match payload {
            Ok(None) => {}
            Ok(Some(Payload::Book(update))) => {
                if let Some(resync) = self.on_book(channel, &update, books) {
                    let channels = json!({"channels": [resync]});
                    send(request(0, "public/unsubscribe", channels.clone()))?;
                    send(request(0, "public/subscribe", channels))?;
                }
            }
            // Channels Keel did not ask for.
            Ok(Some(_)) => {
                self.counters
                    .unknown_channels
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.logs.malformed.warn(|suppressed| {
                    tracing::warn!(%error, suppressed, "Payload of the wrong shape; ignored.");
                });
            }
        }
        Ok(())
    }

    /// Checks, sequences and buffers trades, each with the exchange's text for
    /// it, which is what gets published: a slice of `frame` when the text is
    /// in it (the frame stays in memory while any of its trades wait).
    fn on_trades(&self, channel: &str, trades: &[(TradeView<'_>, &str)], frame: &Bytes) {
        // `trades.{instrument}.{interval}`
        let channel_instrument = channel
            .strip_prefix("trades.")
            .and_then(|rest| rest.rsplit_once('.'))
            .map(|(instrument, _)| instrument);
        let now_ms = keel_deribit::model::to_ms(std::time::SystemTime::now());
        let mut entries = Vec::with_capacity(trades.len());
        let mut gaps = Vec::new();
        // A channel's trades are one instrument's: they share its name.
        let mut instrument: Option<Arc<str>> = None;
        let mut continuity = self.continuity.held();
        for (trade, text) in trades {
            let last = continuity.last(&trade.instrument_name);
            if let Err(reason) = self.gate.check(trade, channel_instrument, last, now_ms) {
                self.gate.reject(reason, channel, text, now_ms);
                self.logs.rejected.warn(|suppressed| {
                    tracing::warn!(
                        reason = reason.as_str(), %channel, instrument = %trade.instrument_name,
                        trade_seq = trade.trade_seq, suppressed,
                        "Trade rejected at the edge; not published."
                    );
                });
                continue;
            }
            match continuity.check(&trade.instrument_name, trade.trade_seq) {
                Verdict::Next | Verdict::Repeat => {}
                Verdict::After(gap) => {
                    self.logs.gaps.warn(|suppressed| {
                        tracing::warn!(instrument = %gap.instrument_name, from = gap.from_seq, to = gap.to_seq, suppressed, "Trade gap; recorded for repair.");
                    });
                    gaps.push(gap);
                }
            }
            let name = match &instrument {
                Some(name) if **name == *trade.instrument_name => name.clone(),
                _ => instrument.insert((*trade.instrument_name).into()).clone(),
            };
            entries.push(Pending {
                instrument: name,
                seq: trade.trade_seq,
                text: share(frame, text),
            });
        }
        drop(continuity);
        self.counters
            .trades
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.counters
            .gaps
            .fetch_add(gaps.len() as u64, Ordering::Relaxed);
        let dropped = self.outbox.push(entries, gaps);
        if dropped > 0 {
            self.logs.dropped.warn(|suppressed| {
                tracing::warn!(
                    dropped,
                    suppressed,
                    "Redis backlog over its limit; oldest trades dropped and recorded as gaps."
                );
            });
        }
    }

    /// Checks `change_id` continuity; returns the channel to resubscribe on a gap.
    fn on_book(
        &self,
        channel: &str,
        update: &BookUpdate,
        last: &mut HashMap<String, i64>,
    ) -> Option<String> {
        if update.starts_chain() {
            last.insert(channel.to_owned(), update.change_id);
            return None;
        }
        match last.get(channel) {
            Some(prev) if update.prev_change_id == Some(*prev) => {
                last.insert(channel.to_owned(), update.change_id);
                None
            }
            // Changes before our snapshot arrived are ignored until it does.
            None => None,
            Some(_) => {
                last.remove(channel);
                self.counters.book_resyncs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    channel,
                    "Book gap; resubscribing that instrument for a new snapshot."
                );
                Some(channel.to_owned())
            }
        }
    }
}

/// `part` as a slice of `whole` when it lies in it, else a copy.
fn share(whole: &Bytes, part: &str) -> Bytes {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let at = part.as_ptr() as usize;
    if at >= start && at + part.len() <= end {
        whole.slice_ref(part.as_bytes())
    } else {
        Bytes::copy_from_slice(part.as_bytes())
    }
}

/// A notification's data as the connection read it.
enum Data<'a> {
    /// Trades, decoded in the same pass as the frame, each with its text.
    Trades(Texts<'a>),
    /// The data's text, to decode by its channel.
    Text(&'a str),
}

/// The request a response answers: its id; for an error without one
/// ("request entity too large"), the exchange could not read the request, and it
/// is the oldest still waiting, which must not wait forever.
fn addressee(response: &keel_deribit::Response, waiting: &HashMap<u64, &'static str>) -> u64 {
    if response.is_unaddressed() && response.outcome.is_err() {
        waiting.keys().min().copied().unwrap_or(0)
    } else {
        response.id.as_u64().unwrap_or(0)
    }
}

/// `from + by`, or a day later when that does not fit an `Instant`
/// (configuration bounds the durations; this only keeps a bad one from panicking).
fn later(from: Instant, by: Duration) -> Instant {
    from.checked_add(by)
        .unwrap_or_else(|| from + Duration::from_secs(86_400))
}

/// How long to wait between attempts when Redis or PostgreSQL refuse the publisher.
pub(super) const PUBLISH_RETRY: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    fn response(text: &str) -> keel_deribit::Response {
        match parse_server_frame(text) {
            Ok(ServerFrame::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_error_without_an_id_fails_the_oldest_request_still_waiting() {
        let waiting: HashMap<u64, &'static str> = [
            (4, "public/subscribe"),
            (3, "public/subscribe"),
            (9, "public/auth"),
        ]
        .into();
        // As recorded (tmatic issue 402): no id at all.
        let too_large = response(
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"request entity too large"},"usIn":1,"usOut":2,"usDiff":1,"testnet":true}"#,
        );
        assert!(too_large.is_unaddressed());
        assert_eq!(addressee(&too_large, &waiting), 3);
        let null_id = response(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
        );
        assert_eq!(addressee(&null_id, &waiting), 3);
        let addressed = response(r#"{"jsonrpc":"2.0","id":9,"result":"ok"}"#);
        assert_eq!(addressee(&addressed, &waiting), 9);
        assert_eq!(
            addressee(&too_large, &HashMap::new()),
            0,
            "nothing waiting: ignored"
        );
    }
}

//! The executor's own WebSocket session: one task owns the socket, answers
//! the exchange's heartbeats itself (so a busy executor is never disconnected
//! for it, which would fire cancel on disconnect), watches for silence, and
//! hands every other frame to the executor's engine.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use keel_deribit::{parse_server_frame, Request, ServerFrame};

/// Frames the engine has not taken yet, at most: more means the engine is
/// stuck, and the session ends rather than buffer without bound.
const INBOX: usize = 65_536;
/// Requests queued for the socket, at most.
const OUTBOX: usize = 1024;
/// How long a close handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What the socket task hands the engine.
#[derive(Debug)]
pub(super) enum Inbound {
    /// A frame other than a heartbeat.
    Frame(ServerFrame),
    /// The session is over, and why.
    Ended(String),
}

/// A live session: requests go out through `send`, frames come in on `inbox`.
#[derive(Debug)]
pub(super) struct Socket {
    out: mpsc::Sender<String>,
    pub(super) inbox: mpsc::Receiver<Inbound>,
    next_id: u64,
    /// Aborted with the socket, so the task never outlives it.
    _task: AbortOnDropHandle<()>,
}

impl Socket {
    /// Connects; the task runs until the socket fails, the peer goes silent
    /// for twice `heartbeat`, or `stop` fires.
    pub(super) async fn connect(
        url: &str,
        ca_file: Option<&std::path::Path>,
        connect_timeout: Duration,
        heartbeat: Duration,
        stop: CancellationToken,
    ) -> Result<Self, String> {
        let tls = keel_deribit::tls::client_config(ca_file)
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let (ws, _) = timeout(
            connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(
                url,
                None,
                // No Nagle: a request goes out at once, not held until the
                // exchange acknowledges the one before.
                true,
                Some(tokio_tungstenite::Connector::Rustls(tls)),
            ),
        )
        .await
        .map_err(|_| format!("no connection to {url} within {connect_timeout:?}"))?
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        let (out, mut queue) = mpsc::channel::<String>(OUTBOX);
        let (inbound, inbox) = mpsc::channel::<Inbound>(INBOX);
        let task = tokio::spawn(async move {
            let (mut sink, mut source) = ws.split();
            let silence = heartbeat.saturating_mul(2);
            let mut deadline = Instant::now() + silence + connect_timeout;
            let ended = loop {
                tokio::select! {
                    () = stop.cancelled() => break "stopped".to_owned(),
                    () = sleep_until(deadline) => break format!("nothing heard for {silence:?}"),
                    text = queue.recv() => match text {
                        Some(text) => {
                            if let Err(e) = sink.send(Message::Text(text.into())).await {
                                break format!("send failed: {e}");
                            }
                        }
                        None => break "closed by the executor".to_owned(),
                    },
                    frame = source.next() => {
                        let text = match frame {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(Message::Close(_))) | None => break "the exchange closed the connection".to_owned(),
                            Some(Err(e)) => break format!("connection lost: {e}"),
                            Some(Ok(_)) => continue,
                        };
                        deadline = Instant::now() + silence;
                        match parse_server_frame(text.as_str()) {
                            Ok(ServerFrame::TestRequest) => {
                                let answer = request(0, "public/test", json!({}));
                                if let Err(e) = sink.send(Message::Text(answer.into())).await {
                                    break format!("send failed: {e}");
                                }
                            }
                            Ok(ServerFrame::Heartbeat) => {}
                            Ok(frame) => {
                                if inbound.try_send(Inbound::Frame(frame)).is_err() {
                                    break "the executor stopped taking frames".to_owned();
                                }
                            }
                            Err(error) => {
                                tracing::warn!(%error, "Malformed frame on the executor's session; ignored.");
                            }
                        }
                    }
                }
            };
            let _ = timeout(CLOSE_WAIT, sink.close()).await;
            let _ = inbound.try_send(Inbound::Ended(ended));
        });
        Ok(Self {
            out,
            inbox,
            next_id: 1,
            _task: AbortOnDropHandle::new(task),
        })
    }

    /// Sends a request; its id.
    pub(super) fn send(&mut self, method: &str, params: Value) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.out
            .try_send(request(id, method, params))
            .map_err(|_| "the socket stopped taking requests".to_owned())?;
        Ok(id)
    }
}

fn request(id: u64, method: &str, params: Value) -> String {
    serde_json::to_string(&Request::new(id, method, params)).unwrap_or_default()
}

//! A minimal Deribit WebSocket client for tests: requests by id, notifications
//! kept in arrival order, everything parsed with Keel's protocol types.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use keel_deribit::{parse_server_frame, Request, Response, ServerFrame};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Server frames that were not the response being waited for.
    pub backlog: VecDeque<ServerFrame>,
    /// Text frames that did not parse.
    pub garbage: Vec<String>,
}

/// What the next read gave.
pub enum Read {
    Frame(ServerFrame),
    Closed,
    TimedOut,
}

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect to the simulator");
        Self {
            ws,
            next_id: 1,
            backlog: VecDeque::new(),
            garbage: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next parsed frame (garbage frames are kept aside), a close, or a timeout.
    pub async fn read(&mut self, timeout: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Read::TimedOut,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                    return Read::Closed
                }
                Ok(Some(Ok(Message::Text(text)))) => match parse_server_frame(text.as_str()) {
                    Ok(frame) => return Read::Frame(frame),
                    Err(_) => self.garbage.push(text.to_string()),
                },
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends a request with `id` and waits for its response.
    pub async fn request_with_id(&mut self, id: Value, method: &str, params: Value) -> Response {
        let request = Request::new(id.clone(), method, params);
        self.send_raw(serde_json::to_string(&request).unwrap())
            .await;
        loop {
            match self.read(Duration::from_secs(10)).await {
                Read::Frame(ServerFrame::Response(r)) if r.id == id => return r,
                Read::Frame(frame) => self.backlog.push_back(frame),
                Read::Closed => panic!("connection closed while waiting for {method}"),
                Read::TimedOut => panic!("no answer to {method}"),
            }
        }
    }

    pub async fn request(&mut self, method: &str, params: Value) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        self.request_with_id(json!(id), method, params).await
    }

    /// The next notification on `channel` (backlog first), or None at the deadline.
    pub async fn next_on(&mut self, channel: &str, timeout: Duration) -> Option<String> {
        if let Some(pos) = self
            .backlog
            .iter()
            .position(|f| matches!(f, ServerFrame::Subscription { channel: c, .. } if c == channel))
        {
            if let Some(ServerFrame::Subscription { data, .. }) = self.backlog.remove(pos) {
                return Some(data.get().to_owned());
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Frame(ServerFrame::Subscription { channel: c, data }) if c == channel => {
                    return Some(data.get().to_owned())
                }
                Read::Frame(frame) => self.backlog.push_back(frame),
                Read::Closed | Read::TimedOut => return None,
            }
        }
    }

    /// Waits until the server closes the connection; false at the deadline.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Closed => return true,
                Read::TimedOut => return false,
                Read::Frame(frame) => self.backlog.push_back(frame),
            }
        }
    }
}

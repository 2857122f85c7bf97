//! Headless Chromium driven over the DevTools protocol, for the dashboard tests.
//!
//! Only Debian's `chromium` package is needed (no chromedriver, no npm): the
//! browser is started with `--remote-debugging-port=0`, its page target is found
//! through `/json/list`, and expressions are evaluated in the page over that
//! target's WebSocket.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The Chromium binary: `KEEL_CHROMIUM`, or the first of the usual names on PATH.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KEEL_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|candidate| candidate.is_file())
}

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    /// Opens `url` in a fresh headless Chromium; `None` when none is installed.
    pub async fn open(url: &str) -> Option<Self> {
        let Some(binary) = chromium() else {
            eprintln!("skipped: Chromium is not installed (Debian package `chromium`)");
            return None;
        };
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1400,800",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let browser_ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("ws://") {
                    return line[at..].trim().to_owned();
                }
            }
            panic!("chromium exited before it listened for DevTools");
        })
        .await
        .expect("chromium listens for DevTools within 30 s");
        // Keep reading its log so a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let host = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_owned();
        let targets = reqwest::get(format!("http://{host}/json/list"))
            .await
            .expect("DevTools target list")
            .text()
            .await
            .expect("target list");
        let targets: Value = serde_json::from_str(&targets).expect("target list is JSON");
        let page = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(page)
            .await
            .expect("connect to the page target");
        Some(Self {
            child,
            _profile: profile,
            ws,
            next_id: 1,
        })
    }

    /// Sends one DevTools command and returns its result; events are skipped.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::Text(request.to_string().into()))
            .await
            .expect("send a DevTools command");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("the page target is open")
                .expect("a DevTools frame");
            let Message::Text(text) = frame else { continue };
            let answer: Value = serde_json::from_str(&text).expect("DevTools speaks JSON");
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method} failed: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "`{expression}` threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until `accept` takes its value, or panics after
    /// `deadline` with the last value.
    pub async fn until(
        &mut self,
        what: &str,
        deadline: Duration,
        expression: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let value = self.eval(expression).await;
            if accept(&value) {
                return value;
            }
            assert!(
                start.elapsed() < deadline,
                "{what}: not within {deadline:?}; last `{expression}` = {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves what the page shows as a PNG.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        let shot = self
            .command("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

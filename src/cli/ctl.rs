//! `keel ctl`: the admin API from a terminal.

use serde_json::Value;

/// `println!` that a closed pipe (`keel ctl tree | head`) ends quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use crate::config::Config;
use crate::exit_code;

/// Where the daemon's admin endpoint is, and how to talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// Admin base URL (default: from `[admin] listen`).
    #[arg(long)]
    pub admin_url: Option<String>,
    /// Bearer token (default: `[admin] token`, or KEEL_ADMIN_TOKEN).
    #[arg(long, env = "KEEL_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: CtlAction,
}

/// `keel ctl` actions.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlAction {
    /// Draw the supervision tree.
    Tree,
    /// An actor's recent messages; `--follow` keeps printing new ones.
    Messages {
        /// The actor's name, as `keel ctl tree` shows it.
        name: String,
        /// How many recent messages.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Keep printing messages as they happen.
        #[arg(long)]
        follow: bool,
    },
    /// Restart an actor now.
    Restart {
        /// The actor's name, as `keel ctl tree` shows it.
        name: String,
    },
    /// Run a scheduled task now (`instruments`, `janitor`, `backfill-gaps`).
    Run {
        /// The task's name, as `keel task` takes it.
        task: String,
    },
    /// Shut the daemon down gracefully (as SIGTERM).
    Shutdown,
    /// The executor's kill switch: stop taking intents, cancel every open order.
    Halt,
    /// Turn the kill switch off: the executor takes intents again.
    Resume,
    /// The instances sharing this Redis, who runs each scheduled task, and
    /// every consumer group's consumers (`[cluster] enabled`).
    Cluster,
}

/// The daemon cannot be reached (`EX_UNAVAILABLE`).
const UNAVAILABLE: u8 = 69;
/// The token was refused (`EX_NOPERM`).
const NO_PERMISSION: u8 = 77;

struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str) -> Result<reqwest::Response, u8> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            eprintln!("keel ctl: cannot reach {}: {e}", self.base);
            UNAVAILABLE
        })?;
        match response.status().as_u16() {
            401 => {
                eprintln!(
                    "keel ctl: the daemon refused the token (set --token or KEEL_ADMIN_TOKEN)"
                );
                Err(NO_PERMISSION)
            }
            code if code >= 400 => {
                let text = response.text().await.unwrap_or_default();
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                eprintln!(
                    "keel ctl: {}",
                    body["error"].as_str().unwrap_or("request failed")
                );
                Err(exit_code::TASK_FAILED)
            }
            _ => Ok(response),
        }
    }

    async fn json(&self, method: reqwest::Method, path: &str) -> Result<Value, u8> {
        let response = self.send(method, path).await?;
        let text = response.text().await.unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| {
            eprintln!("keel ctl: unexpected answer: {e}");
            exit_code::TASK_FAILED
        })
    }
}

pub(super) async fn run(config: &Config, args: CtlArgs) -> u8 {
    let client = Client {
        base: args
            .admin_url
            .unwrap_or_else(|| format!("http://{}", config.admin.listen))
            .trim_end_matches('/')
            .to_owned(),
        token: args
            .token
            .or_else(|| config.admin.token.as_ref().map(|t| t.expose().to_owned())),
        http: reqwest::Client::new(),
    };
    let result = match args.action {
        CtlAction::Tree => tree(&client).await,
        CtlAction::Messages {
            name,
            limit,
            follow,
        } => messages(&client, &name, limit, follow).await,
        CtlAction::Restart { name } => client
            .json(
                reqwest::Method::POST,
                &format!("/api/actors/{name}/restart"),
            )
            .await
            .map(|_| out!("restarted {name}")),
        CtlAction::Run { task } => client
            .json(reqwest::Method::POST, &format!("/api/tasks/{task}/run"))
            .await
            .map(|_| out!("started {task}")),
        CtlAction::Shutdown => client
            .json(reqwest::Method::POST, "/api/shutdown")
            .await
            .map(|_| out!("shutting down")),
        CtlAction::Halt => client
            .json(reqwest::Method::POST, "/api/executor/halt")
            .await
            .map(|_| out!("executor halted: intake stopped, open orders cancelled")),
        CtlAction::Resume => client
            .json(reqwest::Method::POST, "/api/executor/resume")
            .await
            .map(|_| out!("executor resumed")),
        CtlAction::Cluster => client
            .json(reqwest::Method::GET, "/api/cluster")
            .await
            .map(|view| out!("{}", draw_cluster(&view))),
    };
    match result {
        Ok(()) => exit_code::OK,
        Err(code) => code,
    }
}

async fn tree(client: &Client) -> Result<(), u8> {
    let tree = client.json(reqwest::Method::GET, "/api/tree").await?;
    let actors = tree["actors"].as_array().cloned().unwrap_or_default();
    fn line(a: &Value) -> String {
        let mut text = format!(
            "{} ({}) {}",
            a["name"].as_str().unwrap_or("?"),
            a["kind"].as_str().unwrap_or("?"),
            a["state"].as_str().unwrap_or("?")
        );
        if a["restarts"].as_u64().unwrap_or(0) > 0 {
            text.push_str(&format!(", {} restarts", a["restarts"]));
        }
        if let Some(status) = a["details"]["status"].as_str() {
            text.push_str(&format!(" [{status}]"));
        }
        if let Some(breaker) = a["details"]["breaker"]["state"].as_str() {
            text.push_str(&format!(" [breaker {breaker}]"));
        }
        let executor = &a["details"]["executor"];
        if executor.is_object() {
            if executor["halted"].as_bool() == Some(true) {
                text.push_str(" [HALTED]");
            } else if let Some(session) = a["details"]["session"].as_str() {
                text.push_str(&format!(" [{session}]"));
            }
            text.push_str(&format!(" [{} open orders]", executor["open"]));
        }
        let group = &a["details"]["group_progress"];
        if group.is_object() {
            let lag = group["lag"]
                .as_u64()
                .map_or_else(|| "?".to_owned(), |n| n.to_string());
            text.push_str(&format!(" [lag {lag}, pending {}]", group["pending"]));
        }
        let depth = a["mailbox_depth"].as_u64().unwrap_or(0);
        if depth > 0 {
            text.push_str(&format!(" [mailbox {depth}]"));
        }
        if let Some(reason) = a["last_failure"]["reason"].as_str() {
            text.push_str(&format!(" — last failure: {reason}"));
        }
        text
    }
    fn draw(a: &Value, prefix: &str, out: &mut Vec<String>, actors: &[Value]) {
        let children: Vec<&str> = a["children"]
            .as_array()
            .map_or(Vec::new(), |c| c.iter().filter_map(Value::as_str).collect());
        for (i, child) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            let Some(c) = actors.iter().find(|x| x["name"] == *child) else {
                continue;
            };
            out.push(format!(
                "{prefix}{}{}",
                if last { "└── " } else { "├── " },
                line(c)
            ));
            draw(
                c,
                &format!("{prefix}{}", if last { "    " } else { "│   " }),
                out,
                actors,
            );
        }
    }
    let mut out = Vec::new();
    for root in actors.iter().filter(|a| a["parent"].is_null()) {
        out.push(line(root));
        draw(root, "", &mut out, &actors);
    }
    out!("{}", out.join("\n"));
    Ok(())
}

/// `GET /api/cluster` as text: members, task holders, consumers.
fn draw_cluster(view: &Value) -> String {
    let list = |key: &str| view[key].as_array().cloned().unwrap_or_default();
    let seconds = |ms: &Value| format!("{:.1}s", ms.as_f64().unwrap_or(0.0) / 1000.0);
    let mut out = vec![format!(
        "instance {} (lease ttl {}, heartbeat {})",
        view["instance"].as_str().unwrap_or("?"),
        seconds(&view["lease_ttl_ms"]),
        match &view["heartbeat"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    )];
    out.push("members:".into());
    for m in list("members") {
        let leases: Vec<&str> = m["leases"]
            .as_array()
            .map_or(Vec::new(), |l| l.iter().filter_map(Value::as_str).collect());
        out.push(format!(
            "  {}{} {} heartbeat {} ago{}",
            m["id"].as_str().unwrap_or("?"),
            if m["self"] == true { " (this one)" } else { "" },
            if m["live"] == true { "live" } else { "SILENT" },
            seconds(&m["heartbeat_age_ms"]),
            if leases.is_empty() {
                String::new()
            } else {
                format!(", holds {}", leases.join(" "))
            }
        ));
    }
    for (title, key) in [("receivers:", "receivers"), ("analyzers:", "analyzers")] {
        out.push(title.into());
        for r in list(key) {
            out.push(format!(
                "  {}: {}",
                r["instrument"].as_str().unwrap_or("?"),
                r["instance"]
                    .as_str()
                    .map_or("no lease held".to_owned(), |i| format!(
                        "{i} (token {})",
                        r["token"]
                    ))
            ));
        }
    }
    out.push("scheduled tasks:".into());
    for t in list("tasks") {
        out.push(format!(
            "  {}: {}",
            t["task"].as_str().unwrap_or("?"),
            t["instance"]
                .as_str()
                .map_or("not run yet".to_owned(), |i| {
                    let started = t["interval_start_ms"].as_u64().unwrap_or(0);
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(started);
                    format!(
                        "the interval from {} run by {i}",
                        humantime::format_rfc3339_seconds(at)
                    )
                })
        ));
    }
    out.push("consumer groups:".into());
    for g in list("groups") {
        let consumers = g["consumers"].as_array().cloned().unwrap_or_default();
        out.push(format!(
            "  {} on {}: {} consumer{}",
            g["group"].as_str().unwrap_or("?"),
            g["stream"].as_str().unwrap_or("?"),
            consumers.len(),
            if consumers.len() == 1 { "" } else { "s" }
        ));
        for c in consumers {
            out.push(format!(
                "    {} pending {} idle {}",
                c["name"].as_str().unwrap_or("?"),
                c["pending"],
                seconds(&c["idle_ms"])
            ));
        }
    }
    out.join("\n")
}

fn print_message(m: &Value) {
    out!(
        "{} {} {}",
        m["at"].as_str().unwrap_or("?"),
        m["kind"].as_str().unwrap_or("?"),
        m["summary"].as_str().unwrap_or("")
    );
}

async fn messages(client: &Client, name: &str, limit: usize, follow: bool) -> Result<(), u8> {
    let recent = client
        .json(
            reqwest::Method::GET,
            &format!("/api/actors/{name}/messages?limit={}", limit.clamp(1, 1000)),
        )
        .await?;
    recent["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .for_each(print_message);
    if !follow {
        return Ok(());
    }
    let mut response = client
        .send(
            reqwest::Method::GET,
            &format!("/api/actors/{name}/messages/stream"),
        )
        .await?;
    let mut pending = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if let Ok(m) = serde_json::from_str::<Value>(data) {
                    print_message(&m);
                }
            }
        }
    }
    Ok(())
}

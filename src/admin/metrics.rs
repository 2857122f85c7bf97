//! `GET /metrics`: the registry in Prometheus text format. Names live under
//! `keel_`, counters end in `_total`, and every label set is bounded (actor
//! names, the six states, breaker states).

use std::fmt::Write as _;

use keel_actors::resource::LATENCY_BUCKETS;
use keel_core::registry::{ActorState, TreeSnapshot};
use serde_json::Value;

const STATES: [(ActorState, &str); 6] = [
    (ActorState::Starting, "starting"),
    (ActorState::Running, "running"),
    (ActorState::Restarting, "restarting"),
    (ActorState::Draining, "draining"),
    (ActorState::Stopped, "stopped"),
    (ActorState::Failed, "failed"),
];

/// Label values are actor names; escape them as the format requires anyway.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// Every metric Keel exposes, from one registry snapshot.
pub(super) fn render(tree: &TreeSnapshot) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.header(
        "keel_actor_restarts_total",
        "counter",
        "Times each actor was restarted.",
    );
    for a in &tree.actors {
        f.sample(
            "keel_actor_restarts_total",
            &[("actor", &a.name)],
            f64::from(a.restarts),
        );
    }
    f.header(
        "keel_actor_messages_handled_total",
        "counter",
        "Messages each actor handled.",
    );
    for a in &tree.actors {
        f.sample(
            "keel_actor_messages_handled_total",
            &[("actor", &a.name)],
            a.messages_handled as f64,
        );
    }
    f.header(
        "keel_actor_state",
        "gauge",
        "1 for each actor's current state, 0 for the others.",
    );
    for a in &tree.actors {
        for (state, label) in STATES {
            f.sample(
                "keel_actor_state",
                &[("actor", &a.name), ("state", label)],
                f64::from(u8::from(a.state == state)),
            );
        }
    }
    f.header(
        "keel_actor_uptime_seconds",
        "gauge",
        "Seconds the current incarnation has been running.",
    );
    for a in &tree.actors {
        f.sample(
            "keel_actor_uptime_seconds",
            &[("actor", &a.name)],
            a.uptime.map_or(0.0, |d| d.as_secs_f64()),
        );
    }
    f.header(
        "keel_actor_mailbox_depth",
        "gauge",
        "Messages waiting in each actor's mailbox.",
    );
    for a in &tree.actors {
        f.sample(
            "keel_actor_mailbox_depth",
            &[("actor", &a.name)],
            a.mailbox_depth as f64,
        );
    }
    resources(&mut f, tree);
    consumer_groups(&mut f, tree);
    tasks(&mut f, tree);
    let breakers = with_detail(tree, "breaker");
    if !breakers.is_empty() {
        f.header(
            "keel_redis_breaker_state",
            "gauge",
            "1 for the circuit breaker's current state.",
        );
        for (actor, b) in &breakers {
            for state in ["closed", "open", "half_open"] {
                let current = b.get("state").and_then(Value::as_str) == Some(state);
                f.sample(
                    "keel_redis_breaker_state",
                    &[("actor", actor), ("state", state)],
                    f64::from(u8::from(current)),
                );
            }
        }
        f.header(
            "keel_redis_breaker_transitions_total",
            "counter",
            "Circuit breaker state changes.",
        );
        for (actor, b) in &breakers {
            f.sample(
                "keel_redis_breaker_transitions_total",
                &[("actor", actor)],
                number(b, "transitions"),
            );
        }
        f.header(
            "keel_redis_breaker_rejected_calls_total",
            "counter",
            "Calls refused while the circuit was open.",
        );
        for (actor, b) in &breakers {
            f.sample(
                "keel_redis_breaker_rejected_calls_total",
                &[("actor", actor)],
                number(b, "rejected"),
            );
        }
    }
    let receivers = with_detail(tree, "receiver");
    for (metric, key, kind, help) in [
        (
            "keel_receiver_frames_total",
            "frames",
            "counter",
            "Frames read from the exchange.",
        ),
        (
            "keel_receiver_trades_total",
            "trades",
            "counter",
            "Trades read from the exchange.",
        ),
        (
            "keel_receiver_malformed_frames_total",
            "malformed_frames",
            "counter",
            "Frames that could not be parsed.",
        ),
        (
            "keel_receiver_gaps_total",
            "gaps_detected",
            "counter",
            "Trade sequence gaps recorded.",
        ),
        (
            "keel_receiver_book_resyncs_total",
            "book_resyncs",
            "counter",
            "Order books resubscribed after a gap.",
        ),
        (
            "keel_receiver_buffered_entries",
            "buffered",
            "gauge",
            "Trades waiting for Redis.",
        ),
        (
            "keel_receiver_dropped_entries_total",
            "dropped",
            "counter",
            "Trades dropped over the buffer limit (recorded as gaps).",
        ),
        (
            "keel_receiver_binary_frames_total",
            "binary_frames",
            "counter",
            "Binary frames from the exchange (it sends text only; ignored).",
        ),
        (
            "keel_receiver_unknown_channel_frames_total",
            "unknown_channels",
            "counter",
            "Notifications on channels Keel did not subscribe to (ignored).",
        ),
    ] {
        if receivers.is_empty() {
            break;
        }
        f.header(metric, kind, help);
        for (actor, r) in &receivers {
            f.sample(metric, &[("actor", actor)], number(r, key));
        }
    }
    if !receivers.is_empty() {
        f.header(
            "keel_receiver_last_data_timestamp_seconds",
            "gauge",
            "Unix time of the last market data frame (0: none yet).",
        );
        for (actor, r) in &receivers {
            f.sample(
                "keel_receiver_last_data_timestamp_seconds",
                &[("actor", actor)],
                number(r, "last_data_ms") / 1000.0,
            );
        }
    }
    let rejected = with_detail(tree, "rejected");
    if !rejected.is_empty() {
        f.header(
            "keel_receiver_rejected_trades_total",
            "counter",
            "Trades rejected at the edge, by reason; never published.",
        );
        for (actor, counts) in &rejected {
            for reason in keel_actors::service::receiver::Rejection::ALL {
                f.sample(
                    "keel_receiver_rejected_trades_total",
                    &[("actor", actor), ("reason", reason.as_str())],
                    number(counts, reason.as_str()),
                );
            }
        }
    }
    let consumers: Vec<(&str, &Value)> = tree
        .actors
        .iter()
        .filter_map(|a| {
            let counters = a.details.get("distributor").or(a.details.get("analyzer"))?;
            Some((a.name.as_str(), counters))
        })
        .collect();
    for (metric, key, help) in [
        (
            "keel_consumer_rows_written_total",
            "stored",
            "Rows a stream consumer wrote (new rows only).",
        ),
        (
            "keel_consumer_duplicates_total",
            "duplicates",
            "Entries whose rows were already stored.",
        ),
        (
            "keel_consumer_dead_lettered_total",
            "dead_lettered",
            "Entries sent to the dead-letter stream.",
        ),
    ] {
        if consumers.is_empty() {
            break;
        }
        f.header(metric, "counter", help);
        for (actor, c) in &consumers {
            f.sample(metric, &[("actor", actor)], number(c, key));
        }
    }
    out
}

/// Every actor's detail `key`, for the actors that have one.
/// What the admin server itself refused.
pub(super) fn render_refusals(refusals: &super::Refusals) -> String {
    use std::sync::atomic::Ordering;
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.header(
        "keel_admin_refused_total",
        "counter",
        "Admin requests and connections refused, by reason.",
    );
    for (reason, n) in [
        ("connections", &refusals.connections),
        ("streams", &refusals.streams),
        ("unauthorized", &refusals.unauthorized),
        ("accept_errors", &refusals.accept_errors),
        ("evicted", &refusals.evicted),
    ] {
        f.sample(
            "keel_admin_refused_total",
            &[("reason", reason)],
            n.load(Ordering::Relaxed) as f64,
        );
    }
    out
}

fn with_detail<'t>(tree: &'t TreeSnapshot, key: &str) -> Vec<(&'t str, &'t Value)> {
    tree.actors
        .iter()
        .filter_map(|a| Some((a.name.as_str(), a.details.get(key)?)))
        .collect()
}

fn number(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Pool figures and per-operation call latency and errors of PgActor and RedisActor.
fn resources(f: &mut Family<'_>, tree: &TreeSnapshot) {
    let pools = with_detail(tree, "pool");
    for (metric, key, kind, help) in [
        (
            "keel_pool_connections",
            "connections",
            "gauge",
            "Connections the pool holds.",
        ),
        (
            "keel_pool_idle_connections",
            "idle",
            "gauge",
            "Idle connections in the pool.",
        ),
        (
            "keel_pool_max_connections",
            "max_size",
            "gauge",
            "The pool's maximum size.",
        ),
        (
            "keel_pool_waiting_callers",
            "waiting",
            "gauge",
            "Callers waiting for a connection now.",
        ),
        (
            "keel_pool_checkout_waits_total",
            "waited",
            "counter",
            "Checkouts that had to wait.",
        ),
        (
            "keel_pool_checkout_timeouts_total",
            "timed_out",
            "counter",
            "Checkouts that timed out.",
        ),
    ] {
        if pools.is_empty() {
            break;
        }
        f.header(metric, kind, help);
        for (actor, pool) in &pools {
            f.sample(metric, &[("actor", actor)], number(pool, key));
        }
    }
    let calls = with_detail(tree, "calls");
    if calls.is_empty() {
        return;
    }
    const LATENCY: &str = "keel_resource_call_duration_seconds";
    let (bucket, sum, count_name) = (
        format!("{LATENCY}_bucket"),
        format!("{LATENCY}_sum"),
        format!("{LATENCY}_count"),
    );
    f.header(
        LATENCY,
        "histogram",
        "Time to serve one call, retries included, by operation.",
    );
    for (actor, ops) in &calls {
        let Some(ops) = ops.as_object() else { continue };
        for (op, stats) in ops {
            let buckets = stats.get("buckets").and_then(Value::as_array);
            for (bound, n) in LATENCY_BUCKETS.iter().zip(buckets.into_iter().flatten()) {
                let le = bound.to_string();
                let n = n.as_f64().unwrap_or(0.0);
                f.sample(&bucket, &[("actor", actor), ("op", op), ("le", &le)], n);
            }
            let count = number(stats, "count");
            f.sample(
                &bucket,
                &[("actor", actor), ("op", op), ("le", "+Inf")],
                count,
            );
            f.sample(
                &sum,
                &[("actor", actor), ("op", op)],
                number(stats, "sum_seconds"),
            );
            f.sample(&count_name, &[("actor", actor), ("op", op)], count);
        }
    }
    const ERRORS: &str = "keel_resource_call_errors_total";
    f.header(
        ERRORS,
        "counter",
        "Calls that failed, by operation and error class.",
    );
    for (actor, ops) in &calls {
        let Some(ops) = ops.as_object() else { continue };
        for (op, stats) in ops {
            let Some(errors) = stats.get("errors").and_then(Value::as_object) else {
                continue;
            };
            for (class, n) in errors {
                let n = n.as_f64().unwrap_or(0.0);
                f.sample(ERRORS, &[("actor", actor), ("op", op), ("class", class)], n);
            }
        }
    }
}

/// How far behind each stream consumer's group is.
fn consumer_groups(f: &mut Family<'_>, tree: &TreeSnapshot) {
    let groups = with_detail(tree, "group_progress");
    if groups.is_empty() {
        return;
    }
    f.header(
        "keel_consumer_group_lag_entries",
        "gauge",
        "Stream entries not yet delivered to the consumer's group (absent when Redis cannot tell).",
    );
    for (actor, g) in &groups {
        if let Some(lag) = g.get("lag").and_then(Value::as_f64) {
            f.sample("keel_consumer_group_lag_entries", &[("actor", actor)], lag);
        }
    }
    f.header(
        "keel_consumer_group_pending_entries",
        "gauge",
        "Entries delivered to the consumer's group and not acknowledged yet.",
    );
    for (actor, g) in &groups {
        f.sample(
            "keel_consumer_group_pending_entries",
            &[("actor", actor)],
            number(g, "pending"),
        );
    }
}

/// Completed runs of scheduled tasks.
fn tasks(f: &mut Family<'_>, tree: &TreeSnapshot) {
    let runs = with_detail(tree, "runs");
    if runs.is_empty() {
        return;
    }
    f.header(
        "keel_task_runs_total",
        "counter",
        "Completed task runs by outcome.",
    );
    for (task, r) in &runs {
        for (outcome, key) in [("succeeded", "succeeded"), ("failed", "failed")] {
            f.sample(
                "keel_task_runs_total",
                &[("task", task), ("outcome", outcome)],
                number(r, key),
            );
        }
    }
    f.header(
        "keel_task_run_duration_seconds",
        "summary",
        "Time task runs took.",
    );
    for (task, r) in &runs {
        let count = number(r, "succeeded") + number(r, "failed");
        f.sample(
            "keel_task_run_duration_seconds_sum",
            &[("task", task)],
            number(r, "total_seconds"),
        );
        f.sample(
            "keel_task_run_duration_seconds_count",
            &[("task", task)],
            count,
        );
    }
    f.header(
        "keel_task_last_run_duration_seconds",
        "gauge",
        "Time the last run of each task took.",
    );
    for (task, r) in &runs {
        f.sample(
            "keel_task_last_run_duration_seconds",
            &[("task", task)],
            number(r, "last_seconds"),
        );
    }
}

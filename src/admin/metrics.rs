//! `GET /metrics`: the registry in Prometheus text format. Names live under
//! `keel_`, counters end in `_total`, and every label set is bounded (actor
//! names, the six states, operations, error classes, reasons).
//!
//! The lifecycle families below are the same for every actor; every other family
//! is exported by the typed stats of the actor that counts it
//! ([`keel_core::stats`]).

use keel_core::registry::{ActorState, TreeSnapshot};
use keel_core::stats::{Family, Samples};

const STATES: [ActorState; 6] = [
    ActorState::Starting,
    ActorState::Running,
    ActorState::Restarting,
    ActorState::Draining,
    ActorState::Stopped,
    ActorState::Failed,
];

const RESTARTS: Family = Family::counter(
    "keel_actor_restarts_total",
    "Times each actor was restarted.",
);
const HANDLED: Family = Family::counter(
    "keel_actor_messages_handled_total",
    "Messages each actor handled.",
);
const STATE: Family = Family::gauge(
    "keel_actor_state",
    "1 for each actor's current state, 0 for the others.",
);
const UPTIME: Family = Family::gauge(
    "keel_actor_uptime_seconds",
    "Seconds the current incarnation has been running.",
);
const MAILBOX: Family = Family::gauge(
    "keel_actor_mailbox_depth",
    "Messages waiting in each actor's mailbox.",
);
const REFUSED: Family = Family::counter(
    "keel_admin_refused_total",
    "Admin requests and connections refused, by reason.",
);

const READY: Family = Family::gauge(
    "keel_ready",
    "1 when every resource serves and every permanent worker runs (what /readyz says), else 0.",
);
const STARTED: Family = Family::gauge(
    "keel_start_time_seconds",
    "Unix time the supervision tree started (a new value: the process was restarted).",
);

/// Whether the tree serves, and since when it runs.
pub(super) fn render_tree(handle: &crate::RuntimeHandle, tree: &TreeSnapshot) -> String {
    let mut out = Samples::default();
    let ready = crate::RuntimeHandle::not_ready_in(tree).is_empty();
    out.add(&READY, &[], f64::from(u8::from(ready)));
    let started = handle
        .started_at()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    out.add(&STARTED, &[], started);
    out.render()
}

/// Every metric Keel exposes, from one registry snapshot.
pub(super) fn render(tree: &TreeSnapshot) -> String {
    let mut out = Samples::default();
    for a in &tree.actors {
        let actor = [("actor", a.name.as_str())];
        out.add(&RESTARTS, &actor, f64::from(a.restarts));
        out.add(&HANDLED, &actor, a.messages_handled as f64);
        for state in STATES {
            let current = f64::from(u8::from(a.state == state));
            out.add(
                &STATE,
                &[("actor", &a.name), ("state", state.as_str())],
                current,
            );
        }
        let uptime = a.uptime.map_or(0.0, |d| d.as_secs_f64());
        out.add(&UPTIME, &actor, uptime);
        out.add(&MAILBOX, &actor, a.mailbox_depth as f64);
        a.export(&mut out);
    }
    out.render()
}

/// What the admin server itself refused.
pub(super) fn render_refusals(refusals: &super::Refusals) -> String {
    use std::sync::atomic::Ordering;
    let mut out = Samples::default();
    for (reason, n) in [
        ("connections", &refusals.connections),
        ("streams", &refusals.streams),
        ("unauthorized", &refusals.unauthorized),
        ("accept_errors", &refusals.accept_errors),
        ("evicted", &refusals.evicted),
    ] {
        let n = n.load(Ordering::Relaxed) as f64;
        out.add(&REFUSED, &[("reason", reason)], n);
    }
    out.render()
}

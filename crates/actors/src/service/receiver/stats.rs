//! What the receiver counts, as the registry shows it and `/metrics` exports it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use serde::Serialize;

use keel_core::stats::{Family, Samples, Stats};

use super::connection::Counters;
use super::outbox::Outbox;
use super::validate::{Gate, Rejection};

const FRAMES: Family = Family::counter(
    "keel_receiver_frames_total",
    "Frames read from the exchange.",
);
const TRADES: Family = Family::counter(
    "keel_receiver_trades_total",
    "Trades read from the exchange.",
);
const MALFORMED: Family = Family::counter(
    "keel_receiver_malformed_frames_total",
    "Frames that could not be parsed.",
);
const GAPS: Family = Family::counter("keel_receiver_gaps_total", "Trade sequence gaps recorded.");
const RESYNCS: Family = Family::counter(
    "keel_receiver_book_resyncs_total",
    "Order books resubscribed after a gap.",
);
const BUFFERED: Family = Family::gauge(
    "keel_receiver_buffered_entries",
    "Trades waiting for Redis.",
);
const DROPPED: Family = Family::counter(
    "keel_receiver_dropped_entries_total",
    "Trades dropped over the buffer limit (recorded as gaps).",
);
const BACKLOG_FULL: Family = Family::gauge(
    "keel_receiver_backlog_full",
    "1 while publishing is held back because a consumer group is max_backlog entries behind.",
);
const BACKLOG_HOLDS: Family = Family::counter(
    "keel_receiver_backlog_holds_total",
    "Times publishing was held back for a consumer group max_backlog entries behind.",
);
const BINARY: Family = Family::counter(
    "keel_receiver_binary_frames_total",
    "Binary frames from the exchange (it sends text only; ignored).",
);
const UNKNOWN: Family = Family::counter(
    "keel_receiver_unknown_channel_frames_total",
    "Notifications on channels Keel did not subscribe to (ignored).",
);
const LAST_DATA: Family = Family::gauge(
    "keel_receiver_last_data_timestamp_seconds",
    "Unix time of the last market data frame (0: none yet).",
);
const REJECTED: Family = Family::counter(
    "keel_receiver_rejected_trades_total",
    "Trades rejected at the edge, by reason; never published.",
);

/// The receiver's figures at one moment (the `receiver` detail).
#[derive(Debug, Serialize)]
struct Figures {
    frames: u64,
    trades: u64,
    malformed_frames: u64,
    gaps_detected: u64,
    book_resyncs: u64,
    last_data_ms: u64,
    binary_frames: u64,
    unknown_channels: u64,
    buffered: usize,
    dropped: u64,
    backlog_full: bool,
    backlog_holds: u64,
}

/// The `receiver` detail: the connection's counters and the outbox.
pub(super) struct ReceiverStats {
    counters: Weak<Counters>,
    outbox: Weak<Outbox>,
}

impl ReceiverStats {
    pub(super) fn new(counters: &Arc<Counters>, outbox: &Arc<Outbox>) -> Self {
        Self {
            counters: Arc::downgrade(counters),
            outbox: Arc::downgrade(outbox),
        }
    }

    fn figures(&self) -> Option<Figures> {
        let (c, outbox) = (self.counters.upgrade()?, self.outbox.upgrade()?);
        let read = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        Some(Figures {
            frames: read(&c.frames),
            trades: read(&c.trades),
            malformed_frames: read(&c.malformed),
            gaps_detected: read(&c.gaps),
            book_resyncs: read(&c.book_resyncs),
            last_data_ms: read(&c.last_data_ms),
            binary_frames: read(&c.binary),
            unknown_channels: read(&c.unknown_channels),
            buffered: outbox.len(),
            dropped: outbox.dropped(),
            backlog_full: c.backlog_full.load(Ordering::Relaxed),
            backlog_holds: read(&c.backlog_holds),
        })
    }
}

impl Stats for ReceiverStats {
    fn show(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.figures()?).ok()
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        let Some(f) = self.figures() else { return };
        let labels = [("actor", actor)];
        out.add(&FRAMES, &labels, f.frames as f64);
        out.add(&TRADES, &labels, f.trades as f64);
        out.add(&MALFORMED, &labels, f.malformed_frames as f64);
        out.add(&GAPS, &labels, f.gaps_detected as f64);
        out.add(&RESYNCS, &labels, f.book_resyncs as f64);
        out.add(&BUFFERED, &labels, f.buffered as f64);
        out.add(&DROPPED, &labels, f.dropped as f64);
        out.add(&BACKLOG_FULL, &labels, f64::from(u8::from(f.backlog_full)));
        out.add(&BACKLOG_HOLDS, &labels, f.backlog_holds as f64);
        out.add(&BINARY, &labels, f.binary_frames as f64);
        out.add(&UNKNOWN, &labels, f.unknown_channels as f64);
        out.add(&LAST_DATA, &labels, f.last_data_ms as f64 / 1000.0);
    }
}

/// The `rejected` detail: trades refused at the edge, by reason.
pub(super) struct RejectedStats(pub(super) Weak<Gate>);

impl Stats for RejectedStats {
    fn show(&self) -> Option<serde_json::Value> {
        Some(self.0.upgrade()?.counts())
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        let Some(gate) = self.0.upgrade() else { return };
        for reason in Rejection::ALL {
            let labels = [("actor", actor), ("reason", reason.as_str())];
            out.add(&REJECTED, &labels, gate.count(reason) as f64);
        }
    }
}

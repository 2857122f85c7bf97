//! Per-operation call latency and error counts of one resource, read by the
//! registry when an operator looks (see `Probe::set_stats`).
//!
//! Each call costs one short lock and a few additions; nothing is formatted until
//! the registry is read. Operation names and error classes are `&'static str`
//! chosen in code, so every label set built from them is bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

use keel_core::stats::{Family, Samples};

const LATENCY: Family = Family::histogram(
    "keel_resource_call_duration_seconds",
    "Time to serve one call, retries included, by operation.",
);
const ERRORS: Family = Family::counter(
    "keel_resource_call_errors_total",
    "Calls that failed, by operation and error class.",
);

/// Upper bounds (seconds) of the latency histogram's buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
struct OpStats {
    /// Calls per bucket (not cumulative); the last slot counts those over 10 s.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    count: u64,
    sum_seconds: f64,
    errors: BTreeMap<&'static str, u64>,
}

/// Latency and outcome of every call a resource served, by operation.
#[derive(Debug, Default)]
pub struct CallStats {
    ops: Mutex<BTreeMap<&'static str, OpStats>>,
    /// Callers waiting for a pooled connection right now.
    waiting: AtomicI64,
}

/// Counts a caller as waiting for a connection while it lives.
#[derive(Debug)]
pub struct Waiting<'a>(&'a AtomicI64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CallStats {
    /// Marks the caller as waiting for a pooled connection until the guard drops.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.waiting)
    }

    /// Records one call of `op` that took `elapsed`; `error` is its error class.
    pub fn record(&self, op: &'static str, elapsed: Duration, error: Option<&'static str>) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut ops = self.ops.lock();
        let stats = ops.entry(op).or_default();
        stats.buckets[bucket] += 1;
        stats.count += 1;
        stats.sum_seconds += seconds;
        if let Some(class) = error {
            *stats.errors.entry(class).or_default() += 1;
        }
    }

    /// Callers waiting for a pooled connection right now.
    pub fn waiting_callers(&self) -> u64 {
        u64::try_from(self.waiting.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The latency histogram and error counts, by operation.
    pub fn export(&self, actor: &str, out: &mut Samples) {
        let ops = self.ops.lock();
        for (op, s) in ops.iter() {
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(s.buckets.iter().copied())
                .collect();
            let labels = [("actor", actor), ("op", op)];
            out.add_histogram(&LATENCY, &labels, s.sum_seconds, s.count, &buckets);
        }
        for (op, s) in ops.iter() {
            for (class, n) in &s.errors {
                let labels = [("actor", actor), ("op", op), ("class", class)];
                out.add(&ERRORS, &labels, *n as f64);
            }
        }
    }

    /// The calls as JSON: `{op: {"buckets": [cumulative counts per bound],
    /// "count", "sum_seconds", "errors": {class: n}}}`.
    pub fn ops_json(&self) -> Value {
        let ops = self.ops.lock();
        let ops: serde_json::Map<String, Value> = ops
            .iter()
            .map(|(op, s)| {
                let cumulative: Vec<u64> = s
                    .buckets
                    .iter()
                    .take(LATENCY_BUCKETS.len())
                    .scan(0, |sum, n| {
                        *sum += n;
                        Some(*sum)
                    })
                    .collect();
                let value = json!({
                    "buckets": cumulative,
                    "count": s.count,
                    "sum_seconds": s.sum_seconds,
                    "errors": s.errors,
                });
                ((*op).to_owned(), value)
            })
            .collect();
        Value::Object(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_errors_counted_by_class() {
        let stats = CallStats::default();
        stats.record("ping", Duration::from_micros(300), None);
        stats.record("ping", Duration::from_millis(7), Some("connection"));
        stats.record("ping", Duration::from_secs(30), Some("connection"));
        let v = stats.ops_json();
        let ping = &v["ping"];
        assert_eq!(ping["count"], 3);
        let buckets: Vec<u64> = serde_json::from_value(ping["buckets"].clone()).unwrap();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len());
        assert_eq!(buckets[0], 1, "0.3 ms is under 0.5 ms");
        assert_eq!(buckets[3], 1, "7 ms is over 5 ms");
        assert_eq!(buckets[4], 2, "7 ms is under 10 ms");
        assert_eq!(*buckets.last().unwrap(), 2, "30 s is only in +Inf");
        assert_eq!(ping["errors"]["connection"], 2);
    }

    #[test]
    fn waiting_counts_live_guards() {
        let stats = CallStats::default();
        let a = stats.waiting();
        let b = stats.waiting();
        assert_eq!(stats.waiting_callers(), 2);
        drop(a);
        drop(b);
        assert_eq!(stats.waiting_callers(), 0);
    }
}

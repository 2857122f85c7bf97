//! What one `/metrics` scrape costs to render: Keel's `keel_core::stats::Samples`
//! (filled at scrape time from the registry, then encoded by prometheus-client
//! through a collector) against prometheus-client's own families, registered
//! once up front with every value set on them before encoding: the raw
//! baseline of the same crate.
//! Both render the same series: the families and label sets of a running
//! daemon's scrape, about 450 series. Best of 5 interleaved rounds of 2,000
//! scrapes each. Run: `cargo bench --bench metrics`.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use keel_core::stats::{Family, Samples};
use prometheus_client::metrics::family::Family as PcFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

const SCRAPES: usize = 2_000;
const ROUNDS: usize = 5;

const ACTORS: [&str; 11] = [
    "root",
    "pg",
    "redis",
    "sim",
    "distributor",
    "analyzer",
    "receiver",
    "scheduler",
    "instruments",
    "janitor",
    "backfill-gaps",
];
const STATES: [&str; 6] = [
    "starting",
    "running",
    "restarting",
    "draining",
    "stopped",
    "failed",
];
const OPS: [&str; 7] = [
    "insert_trades",
    "fold_candles",
    "xadd_bulk",
    "read_group",
    "ack",
    "health_check",
    "group_progress",
];
const BUCKETS: [&str; 15] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "+Inf",
];

/// One series: (family, help, labels, value).
type Series = (&'static str, &'static str, Vec<(&'static str, String)>, f64);

type Gauges = PcFamily<Labels, Gauge<f64, AtomicU64>>;

/// One scrape's series.
fn series() -> Vec<Series> {
    let mut out = Vec::new();
    for (i, actor) in ACTORS.iter().enumerate() {
        let a = || vec![("actor", (*actor).to_owned())];
        out.push((
            "keel_actor_restarts_total",
            "Times restarted.",
            a(),
            i as f64,
        ));
        out.push((
            "keel_actor_messages_handled_total",
            "Messages handled.",
            a(),
            1e6 + i as f64,
        ));
        out.push(("keel_actor_uptime_seconds", "Uptime.", a(), 3600.5));
        out.push(("keel_actor_mailbox_depth", "Mailbox depth.", a(), 0.0));
        for state in STATES {
            let labels = vec![("actor", (*actor).to_owned()), ("state", state.to_owned())];
            out.push((
                "keel_actor_state",
                "1 for the current state.",
                labels,
                f64::from(u8::from(state == "running")),
            ));
        }
    }
    for actor in ["pg", "redis"] {
        for op in OPS {
            for le in BUCKETS {
                let labels = vec![
                    ("actor", actor.to_owned()),
                    ("op", op.to_owned()),
                    ("le", le.to_owned()),
                ];
                out.push((
                    "keel_resource_call_duration_seconds_bucket",
                    "Call time.",
                    labels,
                    1234.0,
                ));
            }
        }
    }
    for family in [
        "keel_receiver_frames_total",
        "keel_receiver_trades_total",
        "keel_receiver_gaps_total",
        "keel_consumer_rows_written_total",
        "keel_pool_connections",
        "keel_pool_idle_connections",
    ] {
        out.push((
            family,
            "A figure.",
            vec![("actor", "receiver".to_owned())],
            98765.0,
        ));
    }
    out
}

fn keel(series: &[Series]) -> usize {
    let mut samples = Samples::default();
    for (name, help, labels, value) in series {
        let family = if name.ends_with("_total") {
            Family::counter(name, help)
        } else {
            Family::gauge(name, help)
        };
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        samples.add(&family, &labels, *value);
    }
    samples.render().len()
}

type Labels = Vec<(String, String)>;

/// prometheus-client's registry, built once with one family per name.
struct Kept {
    registry: Registry,
    families: Vec<(&'static str, Gauges)>,
}

impl Kept {
    fn new(series: &[Series]) -> Self {
        let mut registry = Registry::default();
        let mut families: Vec<(&'static str, Gauges)> = Vec::new();
        for (name, help, _, _) in series {
            if families.iter().any(|(n, _)| n == name) {
                continue;
            }
            let family = Gauges::default();
            registry.register(*name, *help, family.clone());
            families.push((name, family));
        }
        Self { registry, families }
    }

    fn scrape(&self, series: &[Series]) -> usize {
        for (name, _, labels, value) in series {
            if let Some((_, family)) = self.families.iter().find(|(n, _)| n == name) {
                let labels: Labels = labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect();
                family.get_or_create(&labels).set(*value);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_or(0, |()| text.len())
    }
}

fn time(mut f: impl FnMut() -> usize) -> Duration {
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        bytes += std::hint::black_box(f());
    }
    assert!(bytes > 0);
    started.elapsed() / SCRAPES as u32
}

fn main() {
    let series = series();
    let kept = Kept::new(&series);
    let (mut ours, mut theirs) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        ours = ours.min(time(|| keel(&series)));
        theirs = theirs.min(time(|| kept.scrape(&series)));
    }
    println!(
        "metrics: one scrape of {} series, best of {ROUNDS} rounds of {SCRAPES}",
        series.len()
    );
    println!("  keel Samples:      {:>8.1} us", ours.as_secs_f64() * 1e6);
    println!(
        "  prometheus-client: {:>8.1} us",
        theirs.as_secs_f64() * 1e6
    );
    println!(
        "  ratio keel / prometheus-client: {:.2}",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}

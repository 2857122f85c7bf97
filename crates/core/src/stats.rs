//! Typed stats: what an actor counts, shown in its registry entry and exported
//! to Prometheus by the same type, so a figure's name is spelled once.
//!
//! An actor registers a [`Stats`] value under a detail key
//! ([`Probe::set_stats`](crate::registry::Probe::set_stats)); reading the
//! registry asks it for its detail ([`Stats::show`]) and `/metrics` asks it for its
//! samples ([`Stats::export`]). Reading happens when an operator looks, so the
//! hot path only bumps its own counters. Adding a metric is one line in the
//! `export` of the type that counts it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// What a Prometheus metric family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

/// One metric family: its name, kind and help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// `keel_...`.
    pub name: &'static str,
    /// Counter, gauge, ...
    pub kind: Kind,
    /// One line for `# HELP`.
    pub help: &'static str,
}

impl Family {
    /// A family whose samples only go up (Prometheus `counter`).
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Counter,
            help,
        }
    }

    /// A family whose samples go up and down (Prometheus `gauge`).
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Gauge,
            help,
        }
    }

    /// A histogram (its series are `_bucket`, `_sum` and `_count`).
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Histogram,
            help,
        }
    }
}

/// Samples collected from every actor's stats, grouped by family, and
/// rendered in the Prometheus text format (0.0.4) by `prometheus-client`.
#[derive(Debug, Default)]
pub struct Samples {
    families: BTreeMap<&'static str, (Family, Vec<Sample>)>,
}

type Labels = Vec<(String, String)>;

/// One series of a family: its labels and value.
type Sample = (Labels, Value);

#[derive(Debug)]
enum Value {
    Number(f64),
    /// Sum, count, and the count of each bucket (not cumulative) by upper bound.
    Histogram(f64, u64, Vec<(f64, u64)>),
}

impl Samples {
    /// A sample of a counter or gauge `family`.
    pub fn add(&mut self, family: &Family, labels: &[(&str, &str)], value: f64) {
        self.push(family, labels, Value::Number(value));
    }

    /// One series of a histogram `family`: its sum, its count, and how many
    /// observations fell in each bucket (upper bound, count in that bucket
    /// alone; `+Inf` is added).
    pub fn add_histogram(
        &mut self,
        family: &Family,
        labels: &[(&str, &str)],
        sum: f64,
        count: u64,
        buckets: &[(f64, u64)],
    ) {
        self.push(
            family,
            labels,
            Value::Histogram(sum, count, buckets.to_vec()),
        );
    }

    fn push(&mut self, family: &Family, labels: &[(&str, &str)], value: Value) {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.families
            .entry(family.name)
            .or_insert_with(|| (*family, Vec::new()))
            .1
            .push((labels, value));
    }

    /// The text format, each family with its `# HELP` and `# TYPE`.
    pub fn render(self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Collected(self)));
        let mut text = String::new();
        // Writing to a String does not fail; an encoding error would be a bug
        // in a family's name, and leaves what was written.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}

/// The samples of one scrape, as prometheus-client collects them.
#[derive(Debug)]
struct Collected(Samples);

impl prometheus_client::collector::Collector for Collected {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::NoLabelSet;
        use prometheus_client::metrics::MetricType;
        for (family, samples) in self.0.families.values() {
            let (name, kind) = match family.kind {
                // The encoder appends `_total` to a counter's name.
                Kind::Counter => (
                    family.name.strip_suffix("_total").unwrap_or(family.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (family.name, MetricType::Gauge),
                Kind::Histogram => (family.name, MetricType::Histogram),
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, kind)?;
            for (labels, value) in samples {
                let mut series = metric.encode_family(labels)?;
                match (family.kind, value) {
                    (Kind::Counter, Value::Number(v)) => {
                        series.encode_counter::<NoLabelSet, f64, f64>(v, None)?;
                    }
                    (_, Value::Number(v)) => series.encode_gauge(v)?,
                    (_, Value::Histogram(sum, count, buckets)) => {
                        series.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What an actor counts.
pub trait Stats: Send + Sync + 'static {
    /// The detail as the registry (`/api/actors`, the dashboard) shows it;
    /// `None` once its source is gone (a stopped incarnation's pool).
    fn show(&self) -> Option<serde_json::Value>;

    /// Its samples, labelled with `actor`. Nothing by default: a detail only
    /// for operators to read.
    fn export(&self, actor: &str, out: &mut Samples) {
        let _ = (actor, out);
    }
}

/// Stats kept by their actor and shared with the registry.
impl<T: Stats> Stats for Arc<T> {
    fn show(&self) -> Option<serde_json::Value> {
        T::show(self)
    }

    fn export(&self, actor: &str, out: &mut Samples) {
        T::export(self, actor, out);
    }
}

/// A detail computed by a closure when the registry is read, exported nowhere.
pub(crate) struct Computed<F>(pub(crate) F);

impl<F> Stats for Computed<F>
where
    F: Fn() -> Option<serde_json::Value> + Send + Sync + 'static,
{
    fn show(&self) -> Option<serde_json::Value> {
        (self.0)()
    }
}

/// A registered [`Stats`] value, as a snapshot carries it.
#[derive(Clone)]
pub struct Handle(pub Arc<dyn Stats>);

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stats")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_group_by_family_whatever_order_they_came_in() {
        const A: Family = Family::counter("keel_a_total", "A.");
        const B: Family = Family::gauge("keel_b", "B.");
        const C: Family = Family::histogram("keel_c_seconds", "C.");
        let mut out = Samples::default();
        out.add(&A, &[("actor", "one")], 1.0);
        out.add(&B, &[], 2.5);
        out.add(&A, &[("actor", "t\"wo")], 3.0);
        out.add_histogram(&C, &[("op", "x")], 0.75, 3, &[(0.5, 2), (1.0, 1)]);
        assert_eq!(
            out.render(),
            "# HELP keel_a_total A.\n# TYPE keel_a_total counter\n\
             keel_a_total{actor=\"one\"} 1.0\nkeel_a_total{actor=\"t\\\"wo\"} 3.0\n\
             # HELP keel_b B.\n# TYPE keel_b gauge\nkeel_b 2.5\n\
             # HELP keel_c_seconds C.\n# TYPE keel_c_seconds histogram\n\
             keel_c_seconds_bucket{op=\"x\",le=\"0.5\"} 2\n\
             keel_c_seconds_bucket{op=\"x\",le=\"1\"} 3\n\
             keel_c_seconds_bucket{op=\"x\",le=\"+Inf\"} 3\n\
             keel_c_seconds_sum{op=\"x\"} 0.75\nkeel_c_seconds_count{op=\"x\"} 3\n"
        );
    }
}

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
use std::fmt::{self, Write as _};
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
    /// Sum and count.
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
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

    /// A histogram (samples go to `_bucket`, `_sum` and `_count`).
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Histogram,
            help,
        }
    }

    /// A summary (samples go to `_sum` and `_count`).
    pub const fn summary(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Summary,
            help,
        }
    }
}

/// Samples collected from every actor's stats, grouped by family as the text
/// format requires.
#[derive(Debug, Default)]
pub struct Samples {
    families: BTreeMap<&'static str, (Family, String)>,
}

impl Samples {
    /// A sample of `family` itself.
    pub fn add(&mut self, family: &Family, labels: &[(&str, &str)], value: f64) {
        self.add_to(family, "", labels, value);
    }

    /// A sample of one of `family`'s series (`_bucket`, `_sum`, `_count`).
    pub fn add_to(&mut self, family: &Family, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let (_, lines) = self
            .families
            .entry(family.name)
            .or_insert_with(|| (*family, String::new()));
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = if labels.is_empty() {
            writeln!(lines, "{}{suffix} {value}", family.name)
        } else {
            writeln!(
                lines,
                "{}{suffix}{{{}}} {value}",
                family.name,
                labels.join(",")
            )
        };
    }

    /// The text format, each family with its `# HELP` and `# TYPE`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (family, lines) in self.families.values() {
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
            out.push_str(lines);
        }
        out
    }
}

/// Label values are actor names and reasons; escape them as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let mut out = Samples::default();
        out.add(&A, &[("actor", "one")], 1.0);
        out.add(&B, &[("actor", "one")], 2.5);
        out.add(&A, &[("actor", "t\"wo")], 3.0);
        assert_eq!(
            out.render(),
            "# HELP keel_a_total A.\n# TYPE keel_a_total counter\n\
             keel_a_total{actor=\"one\"} 1\nkeel_a_total{actor=\"t\\\"wo\"} 3\n\
             # HELP keel_b B.\n# TYPE keel_b gauge\nkeel_b{actor=\"one\"} 2.5\n"
        );
    }
}

//! Keel's runtime: what every actor needs in order to live in a supervision tree.
//!
//! - [`supervisor`]: the root supervisor (ordered start, restart policies,
//!   intensity, ordered drain) and [`scheduler`], which supervises periodic
//!   children with the same [`child`] slot bookkeeping;
//! - [`registry`] and [`recorded`]: the live view of every actor, its state, its
//!   typed stats and its recent messages;
//! - [`mailbox`]: counted sends, for mailbox depths; [`tasks`]: every task an
//!   actor spawns, owned by it;
//! - [`delay`]: the one backoff policy for restarts and retries; [`bounds`]: valid
//!   ranges of configuration values; [`logs`]: the limiter for repeated warnings;
//!   [`secret`]: values that never print; [`stats`]: the typed figures actors
//!   report, shown in the registry and exported to Prometheus.
#![warn(missing_docs, unreachable_pub)]

pub mod bounds;
pub mod child;
pub mod delay;
pub mod logs;
pub mod mailbox;
pub mod recorded;
pub mod registry;
pub mod scheduler;
pub mod secret;
pub mod stats;
pub mod supervisor;
pub mod tasks;

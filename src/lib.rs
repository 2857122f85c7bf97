//! Keel: a supervised runtime for market-data services.
//!
//! [`Runtime`] starts a supervision tree in-process (the daemon and the tests use
//! the same API); [`config`] loads and validates the configuration; [`cli`] is the
//! `keel` command line; [`admin`] is the admin endpoint; [`tree`] turns a
//! configuration into child specs. The runtime itself is `keel-core`, the actors
//! are `keel-actors`, the exchange protocol and simulator are `keel-deribit`;
//! [`systemd`] speaks the service manager's notify protocol.
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod exit_code;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
mod runtime;
pub mod systemd;
pub mod tree;

pub use keel_core::supervisor::{ChildEvent, TreeExit};
pub use runtime::{Runtime, RuntimeHandle, StartError, TaskOutcome, ROOT};

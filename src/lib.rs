//! Keel: a supervised runtime for market-data services.
//!
//! [`Runtime`] starts a supervision tree in-process (the daemon and the tests use
//! the same API); [`config`] loads and validates the configuration; [`cli`] is the
//! `keel` command line. Concrete actors live in the `keel-actors` crate, re-exported
//! here as [`actors`].
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod exit_code;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
mod runtime;
pub mod supervisor;
pub mod tree;

pub use keel_actors as actors;
pub use runtime::{Runtime, RuntimeHandle, StartError, TaskOutcome, ROOT};
pub use supervisor::{ChildEvent, TreeExit};

//! Every concrete actor of Keel, and the contract they share with the runtime.
//!
//! The runtime crate (`keel`) depends on this one, so the pieces an actor needs in
//! order to live in a Keel supervision tree are defined here: the [`registry`] it
//! reports into, the [`recorded`] wrapper that records its messages, the
//! [`child`] contract the supervisor starts it through, the [`delay`] policy used
//! for every restart and retry, the counted sends of [`mailbox`], and [`secret`] values that never print.
#![warn(missing_docs, unreachable_pub)]

pub mod bounds;
pub mod child;
pub mod delay;
pub mod deribit;
pub mod logs;
pub mod mailbox;
pub mod market;
pub mod recorded;
pub mod registry;
pub mod resource;
pub mod secret;
pub mod service;
pub mod sim;
pub mod tasks;

//! The market-data services, each a supervised worker or task.

pub mod analyzer;
pub mod candles;
pub mod consumer;
pub mod distributor;
pub mod gaps;
pub mod instruments;
pub mod janitor;
pub mod receiver;
pub mod streams;
pub mod task;

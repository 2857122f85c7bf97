//! The market-data services, each a supervised worker or task.

pub mod distributor;
pub mod gaps;
pub mod receiver;
pub mod streams;

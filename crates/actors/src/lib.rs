//! Keel's actors: the resources ([`resource`]: PgActor and RedisActor on one
//! lifecycle, one file per operation) and the work ([`service`]: receiver,
//! distributor, analyzer, and the run-once tasks). They live in a tree built from
//! `keel-core`, speak Deribit through `keel-deribit` and store `keel-market`'s
//! types.
#![warn(missing_docs, unreachable_pub)]

pub mod resource;
pub mod service;

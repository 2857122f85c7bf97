//! The market-data services, each a supervised worker or task.

pub mod analyzer;
pub mod candles;
pub mod cluster;
pub mod consumer;
pub mod distributor;
pub mod executor;
pub mod gaps;
pub mod instruments;
pub mod janitor;
pub mod leases;
pub mod receiver;
pub mod streams;
pub mod task;

/// Now, in ms since the epoch.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(keel_deribit::model::to_ms(std::time::SystemTime::now())).unwrap_or(i64::MAX)
}

/// The exchange's HTTP API as the tasks call it: each answer within 30 s.
fn exchange_http(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<keel_deribit::http::HttpClient, keel_deribit::http::HttpError> {
    keel_deribit::http::HttpClient::new(url, std::time::Duration::from_secs(30), ca_file)
}

//! Instrument sync (`keel task instruments`): the exchange's listing for the
//! configured currencies and kinds, bulk-upserted; an instrument that is no
//! longer listed (expired, delisted) is marked inactive, never deleted.

use serde::{Deserialize, Serialize};

use super::exchange_http;
use super::task::{TaskError, TaskWork};
use crate::resource::pg::PgClient;
use crate::resource::RideOut;
use keel_core::child::Incarnation;
use keel_deribit::model::InstrumentInfo;
use keel_market::Instrument;

/// The `[instruments]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentsConfig {
    /// Currencies whose instruments are synced.
    #[serde(default = "default_currencies")]
    pub currencies: Vec<String>,
    /// Kinds synced (`future`, `option`, `spot`, ...).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<String>,
}

fn default_currencies() -> Vec<String> {
    vec!["BTC".into(), "ETH".into()]
}
fn default_kinds() -> Vec<String> {
    vec!["future".into(), "option".into()]
}

impl InstrumentsConfig {
    /// Every problem, as `(key, what is expected)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut check = keel_core::bounds::Check::new();
        for (key, list) in [("currencies", &self.currencies), ("kinds", &self.kinds)] {
            if list.is_empty() {
                check.push(key, "at least one name");
            }
            if list
                .iter()
                .any(|v| !keel_core::bounds::is_instrument_name(v))
            {
                check.push(
                    key,
                    "names of 1 to 64 letters, digits, `-` or `_` (BTC, future)",
                );
            }
        }
        check.finish()
    }
}

impl Default for InstrumentsConfig {
    fn default() -> Self {
        Self {
            currencies: default_currencies(),
            kinds: default_kinds(),
        }
    }
}

/// The sync's settings; the task is `RunOnce<InstrumentSync>`.
#[derive(Clone, Debug)]
pub struct InstrumentSync {
    /// What to sync.
    pub config: InstrumentsConfig,
    /// PgActor, reached by name in the tree's registry.
    pub pg: PgClient,
    /// The exchange's HTTP base URL.
    pub http_url: String,
    /// A CA to trust for `https://` besides the public roots (`[receiver] ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
}

impl TaskWork for InstrumentSync {
    async fn run(self, own: Incarnation) -> Result<String, TaskError> {
        let probe = &own.probe;
        let exchange = exchange_http(&self.http_url, self.ca_file.as_deref())?;
        let pg = self.pg.clone().riding_out(RideOut::new(&own));
        let (mut upserted, mut deactivated) = (0, 0);
        for currency in &self.config.currencies {
            let listed: Vec<InstrumentInfo> = exchange
                .public(
                    "get_instruments",
                    &[("currency", currency.clone()), ("expired", "false".into())],
                )
                .await?;
            let wanted: Vec<Instrument> = listed
                .iter()
                .filter(|i| self.config.kinds.contains(&i.kind))
                .map(InstrumentInfo::to_instrument)
                .collect();
            let keep: Vec<String> = wanted.iter().map(|i| i.instrument_name.clone()).collect();
            upserted += pg.upsert_instruments(wanted.into()).await?;
            deactivated += pg
                .deactivate_instruments(currency, self.config.kinds.clone(), keep)
                .await?;
        }
        probe.set_detail(
            "last_run",
            serde_json::json!({"upserted": upserted, "deactivated": deactivated}),
        );
        Ok(format!(
            "{upserted} instruments upserted, {deactivated} marked inactive"
        ))
    }
}

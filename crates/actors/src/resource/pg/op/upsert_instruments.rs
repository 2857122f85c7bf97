//! Instruments inserted or updated from the exchange's listing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_postgres::Client;

use keel_market::Instrument;

use tokio_postgres::types::Type;

use crate::resource::pg::executor::begin;
use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Inserts or updates instruments; answers how many rows changed.
#[derive(Clone, Debug)]
pub struct UpsertInstruments(pub Arc<[Instrument]>);

impl Operation for UpsertInstruments {
    type Output = u64;
    const NAME: &'static str = "upsert_instruments";

    fn summary(&self) -> String {
        format!("{} instruments", self.0.len())
    }
}

impl PgOp for UpsertInstruments {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        upsert_instruments(client, pg.timeout_ms(), &self.0).await
    }
}

impl PgClient {
    /// Inserts or updates instruments.
    pub async fn upsert_instruments(&self, rows: Arc<[Instrument]>) -> Result<u64, PgError> {
        self.run(UpsertInstruments(rows)).await
    }
}

const UPSERT_INSTRUMENTS: &str = "\
INSERT INTO instruments (instrument_name, kind, base_currency, quote_currency, tick_size,
                         contract_size, min_trade_amount, creation_timestamp,
                         expiration_timestamp, is_active, option_type, strike)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[],
                     $6::float8[], $7::float8[], $8::timestamptz[], $9::timestamptz[],
                     $10::bool[], $11::text[], $12::float8[])
ON CONFLICT (instrument_name) DO UPDATE SET
    kind = excluded.kind, base_currency = excluded.base_currency,
    quote_currency = excluded.quote_currency, tick_size = excluded.tick_size,
    contract_size = excluded.contract_size, min_trade_amount = excluded.min_trade_amount,
    creation_timestamp = excluded.creation_timestamp,
    expiration_timestamp = excluded.expiration_timestamp, is_active = excluded.is_active,
    option_type = excluded.option_type, strike = excluded.strike, updated_at = now()";

/// Inserts or updates instruments; a name given twice keeps its last version.
async fn upsert_instruments(
    client: &mut Client,
    timeout_ms: u128,
    instruments: &[Instrument],
) -> Result<u64, tokio_postgres::Error> {
    // ON CONFLICT DO UPDATE may touch a row once per statement: keep the last.
    let unique: BTreeMap<&str, &Instrument> = instruments
        .iter()
        .map(|i| (i.instrument_name.as_str(), i))
        .collect();
    let rows: Vec<&Instrument> = unique.into_values().collect();
    let names: Vec<&str> = rows.iter().map(|i| i.instrument_name.as_str()).collect();
    let kinds: Vec<&str> = rows.iter().map(|i| i.kind.as_str()).collect();
    let bases: Vec<&str> = rows.iter().map(|i| i.base_currency.as_str()).collect();
    let quotes: Vec<&str> = rows.iter().map(|i| i.quote_currency.as_str()).collect();
    let ticks: Vec<f64> = rows.iter().map(|i| i.tick_size).collect();
    let sizes: Vec<f64> = rows.iter().map(|i| i.contract_size).collect();
    let mins: Vec<f64> = rows.iter().map(|i| i.min_trade_amount).collect();
    let created: Vec<SystemTime> = rows.iter().map(|i| i.creation_timestamp).collect();
    let expires: Vec<SystemTime> = rows.iter().map(|i| i.expiration_timestamp).collect();
    let active: Vec<bool> = rows.iter().map(|i| i.is_active).collect();
    let option_types: Vec<Option<&str>> = rows.iter().map(|i| i.option_type.as_deref()).collect();
    let strikes: Vec<Option<f64>> = rows.iter().map(|i| i.strike).collect();
    let tx = begin(client, timeout_ms).await?;
    let n = tx
        .execute_typed(
            UPSERT_INSTRUMENTS,
            &[
                (&names, Type::TEXT_ARRAY),
                (&kinds, Type::TEXT_ARRAY),
                (&bases, Type::TEXT_ARRAY),
                (&quotes, Type::TEXT_ARRAY),
                (&ticks, Type::FLOAT8_ARRAY),
                (&sizes, Type::FLOAT8_ARRAY),
                (&mins, Type::FLOAT8_ARRAY),
                (&created, Type::TIMESTAMPTZ_ARRAY),
                (&expires, Type::TIMESTAMPTZ_ARRAY),
                (&active, Type::BOOL_ARRAY),
                (&option_types, Type::TEXT_ARRAY),
                (&strikes, Type::FLOAT8_ARRAY),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

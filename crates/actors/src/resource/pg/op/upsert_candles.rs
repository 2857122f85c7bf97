//! Candles inserted or replaced (gap repair's recomputation, the exchange's chart data).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_postgres::Client;

use keel_market::Candle;

use tokio_postgres::types::Type;

use crate::resource::pg::executor::begin;
use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Inserts or replaces candles; answers how many rows changed.
#[derive(Clone, Debug)]
pub struct UpsertCandles {
    /// The candles.
    pub rows: Arc<[Candle]>,
    /// They come from the exchange's chart data, not from folded trades.
    pub from_exchange: bool,
}

impl Operation for UpsertCandles {
    type Output = u64;
    const NAME: &'static str = "upsert_candles";

    fn summary(&self) -> String {
        let source = if self.from_exchange {
            " from the exchange"
        } else {
            ""
        };
        format!("{} candles{source}", self.rows.len())
    }
}

impl PgOp for UpsertCandles {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        upsert_candles(client, pg.timeout_ms(), &self.rows, self.from_exchange).await
    }
}

impl PgClient {
    /// Inserts or replaces candles.
    pub async fn upsert_candles(&self, rows: Arc<[Candle]>) -> Result<u64, PgError> {
        let from_exchange = false;
        self.run(UpsertCandles {
            rows,
            from_exchange,
        })
        .await
    }

    /// Inserts or replaces candles taken from the exchange's chart data; the
    /// analyzer never folds trades on top of them.
    pub async fn upsert_exchange_candles(&self, rows: Arc<[Candle]>) -> Result<u64, PgError> {
        let from_exchange = true;
        self.run(UpsertCandles {
            rows,
            from_exchange,
        })
        .await
    }
}

const UPSERT_CANDLES: &str = "\
INSERT INTO candles (instrument_name, resolution_minutes, bucket, open, high, low, close,
                     volume, trades, last_trade_seq)
SELECT n, r, b, o, h, l, c, v, t, $10
FROM UNNEST($1::text[], $2::int4[], $3::timestamptz[], $4::float8[], $5::float8[],
            $6::float8[], $7::float8[], $8::float8[], $9::int8[]) AS x(n, r, b, o, h, l, c, v, t)
ON CONFLICT (instrument_name, resolution_minutes, bucket) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, trades = excluded.trades,
    last_trade_seq = excluded.last_trade_seq, updated_at = now()";

/// Inserts or replaces candles; a bucket given twice keeps its last version.
/// `exchange_sourced` candles get a `last_trade_seq` no trade reaches, so the
/// analyzer never folds trades on top of them.
async fn upsert_candles(
    client: &mut Client,
    timeout_ms: u128,
    candles: &[Candle],
    exchange_sourced: bool,
) -> Result<u64, tokio_postgres::Error> {
    let unique: BTreeMap<(&str, u32, SystemTime), &Candle> = candles
        .iter()
        .map(|c| {
            (
                (
                    c.instrument_name.as_str(),
                    c.resolution.as_minutes(),
                    c.bucket,
                ),
                c,
            )
        })
        .collect();
    let rows: Vec<&Candle> = unique.into_values().collect();
    let names: Vec<&str> = rows.iter().map(|c| c.instrument_name.as_str()).collect();
    let resolutions: Vec<i32> = rows
        .iter()
        .map(|c| i32::try_from(c.resolution.as_minutes()).unwrap_or(i32::MAX))
        .collect();
    let buckets: Vec<SystemTime> = rows.iter().map(|c| c.bucket).collect();
    let opens: Vec<f64> = rows.iter().map(|c| c.open).collect();
    let highs: Vec<f64> = rows.iter().map(|c| c.high).collect();
    let lows: Vec<f64> = rows.iter().map(|c| c.low).collect();
    let closes: Vec<f64> = rows.iter().map(|c| c.close).collect();
    let volumes: Vec<f64> = rows.iter().map(|c| c.volume).collect();
    let counts: Vec<i64> = rows.iter().map(|c| c.trades).collect();
    let last_seq: i64 = if exchange_sourced { i64::MAX } else { 0 };
    let tx = begin(client, timeout_ms).await?;
    let n = tx
        .execute_typed(
            UPSERT_CANDLES,
            &[
                (&names, Type::TEXT_ARRAY),
                (&resolutions, Type::INT4_ARRAY),
                (&buckets, Type::TIMESTAMPTZ_ARRAY),
                (&opens, Type::FLOAT8_ARRAY),
                (&highs, Type::FLOAT8_ARRAY),
                (&lows, Type::FLOAT8_ARRAY),
                (&closes, Type::FLOAT8_ARRAY),
                (&volumes, Type::FLOAT8_ARRAY),
                (&counts, Type::INT8_ARRAY),
                (&last_seq, Type::INT8),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

//! Trades folded into candles, each trade once (the analyzer).

use std::sync::Arc;
use std::time::SystemTime;

use tokio_postgres::Client;

use keel_market::Trade;

use tokio_postgres::types::{ToSql, Type};

use crate::resource::pg::executor::begin;
use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Folds trades into candles of these resolutions (minutes), each trade once;
/// answers how many candle rows changed.
#[derive(Clone, Debug)]
pub struct FoldCandles {
    /// The trades to fold, in any order.
    pub trades: Arc<[Trade]>,
    /// Resolutions in minutes.
    pub resolutions: Arc<[i32]>,
}

impl Operation for FoldCandles {
    type Output = u64;
    const NAME: &'static str = "fold_candles";

    fn summary(&self) -> String {
        format!("{} trades into {:?}", self.trades.len(), self.resolutions)
    }
}

impl PgOp for FoldCandles {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        fold_candles(client, pg.timeout_ms(), &self.trades, &self.resolutions).await
    }
}

impl PgClient {
    /// Folds trades into candles of `resolutions` (minutes), each trade once.
    pub async fn fold_candles(
        &self,
        trades: Arc<[Trade]>,
        resolutions: Arc<[i32]>,
    ) -> Result<u64, PgError> {
        self.run(FoldCandles {
            trades,
            resolutions,
        })
        .await
    }
}

/// Folds a batch of trades into their candles for every resolution, counting
/// only trades past each candle's `last_trade_seq` (and each trade once).
const FOLD_CANDLES: &str = "\
WITH t AS (
    SELECT DISTINCT ON (name, seq) name, seq, ts, price, amount
    FROM unnest($1::text[], $2::int8[], $3::timestamptz[], $4::float8[], $5::float8[])
         AS t(name, seq, ts, price, amount)
),
b AS (
    SELECT t.*, r.m,
           to_timestamp(floor(extract(epoch FROM t.ts) / (r.m * 60)) * (r.m * 60)) AS bucket
    FROM t CROSS JOIN unnest($6::int4[]) AS r(m)
),
fresh AS (
    SELECT b.* FROM b
    LEFT JOIN candles c
      ON c.instrument_name = b.name AND c.resolution_minutes = b.m AND c.bucket = b.bucket
    WHERE c.last_trade_seq IS NULL OR b.seq > c.last_trade_seq
),
agg AS (
    SELECT name, m, bucket,
           (array_agg(price ORDER BY seq))[1] AS o, max(price) AS h, min(price) AS l,
           (array_agg(price ORDER BY seq DESC))[1] AS c, sum(amount) AS v, count(*) AS n,
           max(seq) AS last
    FROM fresh GROUP BY name, m, bucket
)
INSERT INTO candles (instrument_name, resolution_minutes, bucket, open, high, low, close,
                     volume, trades, last_trade_seq)
SELECT name, m, bucket, o, h, l, c, v, n, last FROM agg
ON CONFLICT (instrument_name, resolution_minutes, bucket) DO UPDATE SET
    high = greatest(candles.high, excluded.high),
    low = least(candles.low, excluded.low),
    close = excluded.close,
    volume = candles.volume + excluded.volume,
    trades = candles.trades + excluded.trades,
    last_trade_seq = excluded.last_trade_seq,
    updated_at = now()";

/// Per instrument, so two analyzers never fold the same instrument at once.
const LOCK_FOLD: &str = "\
SELECT count(pg_advisory_xact_lock(hashtextextended('candles:' || name, 7308)))
FROM (SELECT DISTINCT unnest($1::text[]) AS name ORDER BY 1) AS names";

/// Runs one candle write in a transaction that first takes the fold lock of
/// each of `instruments`: folding and recomputing never interleave on one.
pub(super) async fn write_candles(
    client: &mut Client,
    timeout_ms: u128,
    instruments: &[&str],
    statement: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<u64, tokio_postgres::Error> {
    let tx = begin(client, timeout_ms).await?;
    tx.query_typed(LOCK_FOLD, &[(&instruments, Type::TEXT_ARRAY)])
        .await?;
    let n = tx.execute_typed(statement, params).await?;
    tx.commit().await?;
    Ok(n)
}

async fn fold_candles(
    client: &mut Client,
    timeout_ms: u128,
    trades: &[Trade],
    resolutions: &[i32],
) -> Result<u64, tokio_postgres::Error> {
    let names: Vec<&str> = trades.iter().map(|t| t.instrument_name.as_str()).collect();
    let seqs: Vec<i64> = trades.iter().map(|t| t.trade_seq).collect();
    let times: Vec<SystemTime> = trades.iter().map(|t| t.timestamp).collect();
    let prices: Vec<f64> = trades.iter().map(|t| t.price).collect();
    let amounts: Vec<f64> = trades.iter().map(|t| t.amount).collect();
    let params: [(&(dyn ToSql + Sync), Type); 6] = [
        (&names, Type::TEXT_ARRAY),
        (&seqs, Type::INT8_ARRAY),
        (&times, Type::TIMESTAMPTZ_ARRAY),
        (&prices, Type::FLOAT8_ARRAY),
        (&amounts, Type::FLOAT8_ARRAY),
        (&resolutions, Type::INT4_ARRAY),
    ];
    write_candles(client, timeout_ms, &names, FOLD_CANDLES, &params).await
}

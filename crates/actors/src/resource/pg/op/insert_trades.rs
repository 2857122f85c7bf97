//! Trades stored idempotently, by binary COPY.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::{Client, Transaction};

use keel_market::Trade;

use tokio_postgres::types::Type;

use crate::resource::pg::executor::begin;
use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Inserts trades, ignoring ones already stored; answers how many were new.
#[derive(Clone, Debug)]
pub struct InsertTrades(pub Arc<[Trade]>);

impl Operation for InsertTrades {
    type Output = u64;
    const NAME: &'static str = "insert_trades";

    fn summary(&self) -> String {
        let first = self.0.first();
        let first = first.map(|t| format!(", first {} #{}", t.instrument_name, t.trade_seq));
        format!("{} trades{}", self.0.len(), first.unwrap_or_default())
    }
}

impl PgOp for InsertTrades {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        insert_trades(client, pg.timeout_ms(), &self.0).await
    }
}

impl PgClient {
    /// Inserts trades idempotently; returns how many were new.
    pub async fn insert_trades(&self, trades: Arc<[Trade]>) -> Result<u64, PgError> {
        self.run(InsertTrades(trades)).await
    }
}

const COPY_TRADES: &str = "\
COPY trades (instrument_name, trade_seq, trade_id, ts, price, amount, direction,
             tick_direction, mark_price, index_price, iv, liquidation, block_trade_id,
             combo_id, combo_trade_id)
FROM STDIN BINARY";

const STAGE_TRADES: &str = "\
CREATE TEMP TABLE keel_trades_stage (
    instrument_name text, trade_seq int8, trade_id text, ts timestamptz, price float8,
    amount float8, direction text, tick_direction int2, mark_price float8,
    index_price float8, iv float8, liquidation text, block_trade_id text, combo_id text,
    combo_trade_id text
) ON COMMIT DROP";

const COPY_STAGE: &str = "\
COPY keel_trades_stage (instrument_name, trade_seq, trade_id, ts, price, amount, direction,
                        tick_direction, mark_price, index_price, iv, liquidation,
                        block_trade_id, combo_id, combo_trade_id)
FROM STDIN BINARY";

const MERGE_STAGE: &str = "\
INSERT INTO trades (instrument_name, trade_seq, trade_id, ts, price, amount, direction,
                    tick_direction, mark_price, index_price, iv, liquidation, block_trade_id,
                    combo_id, combo_trade_id)
SELECT instrument_name, trade_seq, trade_id, ts, price, amount, direction, tick_direction,
       mark_price, index_price, iv, liquidation, block_trade_id, combo_id, combo_trade_id
FROM keel_trades_stage
ON CONFLICT (instrument_name, trade_seq) DO NOTHING";

const TRADE_COLUMNS: [Type; 15] = [
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::INT2,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// Serializes writers of the same instruments for the rest of the transaction
/// (sorted, so two writers never wait on each other in a cycle).
const LOCK_INSTRUMENTS: &str = "\
SELECT count(pg_advisory_xact_lock(hashtextextended(name, 7308)))
FROM (SELECT DISTINCT unnest($1::text[]) AS name ORDER BY 1) AS names";

/// How many of the batch's `(instrument, trade_seq)` ranges are already stored.
const COUNT_STORED: &str = "\
SELECT count(*) FROM trades t
JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS r(name, lo, hi)
  ON t.instrument_name = r.name AND t.trade_seq BETWEEN r.lo AND r.hi";

/// Inserts trades idempotently; returns how many were new.
///
/// The transaction first locks the batch's instruments against other writers,
/// then checks whether any of the batch is already stored. Usually none is, and
/// the batch is copied straight into `trades` (binary COPY, as fast as PostgreSQL
/// takes rows); under the lock no other writer can add a duplicate meanwhile, so
/// the COPY cannot fail on one. When some trades are already there (a resubscribe
/// or a redelivery sent them again) the batch is copied into a staging table and
/// merged with `INSERT ... ON CONFLICT DO NOTHING`. A COPY is never left to fail
/// half-way on purpose: behind PgBouncer that leaves the protocol out of step.
async fn insert_trades(
    client: &mut Client,
    timeout_ms: u128,
    trades: &[Trade],
) -> Result<u64, tokio_postgres::Error> {
    if trades.is_empty() {
        return Ok(0);
    }
    let mut ranges: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for t in trades {
        let range = ranges
            .entry(t.instrument_name.as_str())
            .or_insert((t.trade_seq, t.trade_seq));
        range.0 = range.0.min(t.trade_seq);
        range.1 = range.1.max(t.trade_seq);
    }
    // A batch may hold one trade twice (an exchange that re-sent it, a Redis
    // write retried after a lost reply): COPY straight into `trades` would fail on
    // it, the merge takes it once.
    let mut keys =
        rustc_hash::FxHashSet::with_capacity_and_hasher(trades.len(), Default::default());
    let repeats = !trades
        .iter()
        .all(|t| keys.insert((t.instrument_name.as_str(), t.trade_seq)));
    let names: Vec<&str> = ranges.keys().copied().collect();
    let lows: Vec<i64> = ranges.values().map(|r| r.0).collect();
    let highs: Vec<i64> = ranges.values().map(|r| r.1).collect();

    let tx = begin(client, timeout_ms).await?;
    tx.query_typed(LOCK_INSTRUMENTS, &[(&names, Type::TEXT_ARRAY)])
        .await?;
    let stored: i64 = tx
        .query_typed(
            COUNT_STORED,
            &[
                (&names, Type::TEXT_ARRAY),
                (&lows, Type::INT8_ARRAY),
                (&highs, Type::INT8_ARRAY),
            ],
        )
        .await?
        .first()
        .map_or(Ok(0), |row| row.try_get(0))?;
    let inserted = if stored == 0 && !repeats {
        copy_rows(&tx, COPY_TRADES, trades).await?
    } else {
        tx.batch_execute(STAGE_TRADES).await?;
        copy_rows(&tx, COPY_STAGE, trades).await?;
        tx.execute_typed(MERGE_STAGE, &[]).await?
    };
    tx.commit().await?;
    Ok(inserted)
}

/// Copies `trades` straight into `trades` (binary COPY of every column) inside
/// `tx`, with no lock, check or merge: the raw baseline the benches measure
/// PgActor against.
pub async fn copy_trades(
    tx: &Transaction<'_>,
    trades: &[Trade],
) -> Result<u64, tokio_postgres::Error> {
    copy_rows(tx, COPY_TRADES, trades).await
}

async fn copy_rows(
    tx: &Transaction<'_>,
    copy: &str,
    trades: &[Trade],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in(copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &TRADE_COLUMNS);
    futures::pin_mut!(writer);
    for t in trades {
        writer
            .as_mut()
            .write(&[
                &t.instrument_name,
                &t.trade_seq,
                &t.trade_id,
                &t.timestamp,
                &t.price,
                &t.amount,
                &t.direction.as_str(),
                &t.tick_direction,
                &t.mark_price,
                &t.index_price,
                &t.iv,
                &t.liquidation,
                &t.block_trade_id,
                &t.combo_id,
                &t.combo_trade_id,
            ])
            .await?;
    }
    writer.finish().await
}

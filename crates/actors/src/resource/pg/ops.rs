//! The SQL behind each PgActor operation. Statements are sent with
//! `execute_typed`/`batch_execute` (unnamed), and the one named statement a COPY
//! needs is closed inside its own transaction, so nothing outlives a checkout and
//! PgBouncer's transaction pooling works.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use keel_market::{Candle, Gap, Instrument, Trade};

use super::executor::begin;
use super::Retained;

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
pub(super) async fn insert_trades(
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
    let mut keys = std::collections::HashSet::with_capacity(trades.len());
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
pub(super) async fn upsert_instruments(
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
pub(super) async fn upsert_candles(
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

/// Deletes at most `limit` rows older than `before` in one short transaction.
pub(super) async fn delete_batch(
    client: &mut Client,
    timeout_ms: u128,
    table: Retained,
    before: SystemTime,
    limit: i64,
) -> Result<u64, tokio_postgres::Error> {
    // Table and column names come from a closed enum, never from input.
    let (table, column) = match table {
        Retained::Trades => ("trades", "ts"),
        Retained::Candles => ("candles", "bucket"),
    };
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
    );
    let tx = begin(client, timeout_ms).await?;
    let n = tx
        .execute_typed(&sql, &[(&before, Type::TIMESTAMPTZ), (&limit, Type::INT8)])
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// One round trip.
pub(super) async fn ping(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("SELECT 1").await
}

/// Records gaps (idempotent: the same range twice is one row).
pub(super) async fn record_gaps(
    client: &mut Client,
    timeout_ms: u128,
    gaps: &[Gap],
) -> Result<u64, tokio_postgres::Error> {
    let names: Vec<&str> = gaps.iter().map(|g| g.instrument_name.as_str()).collect();
    let froms: Vec<i64> = gaps.iter().map(|g| g.from_seq).collect();
    let tos: Vec<i64> = gaps.iter().map(|g| g.to_seq).collect();
    let tx = begin(client, timeout_ms).await?;
    let n = tx
        .execute_typed(
            "INSERT INTO trade_gaps (instrument_name, from_seq, to_seq)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[])
             ON CONFLICT DO NOTHING",
            &[
                (&names, Type::TEXT_ARRAY),
                (&froms, Type::INT8_ARRAY),
                (&tos, Type::INT8_ARRAY),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Every recorded gap, oldest first.
pub(super) async fn list_gaps(client: &mut Client) -> Result<Vec<Gap>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT instrument_name, from_seq, to_seq FROM trade_gaps
             ORDER BY instrument_name, from_seq",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Gap {
                instrument_name: r.try_get(0)?,
                from_seq: r.try_get(1)?,
                to_seq: r.try_get(2)?,
            })
        })
        .collect()
}

/// Deletes the recorded gaps a repaired range covers.
pub(super) async fn clear_gap(
    client: &mut Client,
    gap: &Gap,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute_typed(
            "DELETE FROM trade_gaps WHERE instrument_name = $1 AND from_seq >= $2 AND to_seq <= $3",
            &[
                (&gap.instrument_name, Type::TEXT),
                (&gap.from_seq, Type::INT8),
                (&gap.to_seq, Type::INT8),
            ],
        )
        .await
}

/// Holes in an instrument's stored `trade_seq`s, whatever their cause.
pub(super) async fn find_holes(
    client: &mut Client,
    instrument: &str,
) -> Result<Vec<Gap>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT trade_seq + 1, next_seq - 1 FROM (
                 SELECT trade_seq, lead(trade_seq) OVER (ORDER BY trade_seq) AS next_seq
                 FROM trades WHERE instrument_name = $1) s
             WHERE next_seq > trade_seq + 1",
            &[(&instrument, Type::TEXT)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Gap {
                instrument_name: instrument.to_owned(),
                from_seq: r.try_get(0)?,
                to_seq: r.try_get(1)?,
            })
        })
        .collect()
}

/// The highest stored `trade_seq` of an instrument.
pub(super) async fn max_seq(
    client: &mut Client,
    instrument: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = client
        .query_typed_one(
            "SELECT max(trade_seq) FROM trades WHERE instrument_name = $1",
            &[(&instrument, Type::TEXT)],
        )
        .await?;
    row.try_get(0)
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

pub(super) async fn fold_candles(
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
    let tx = begin(client, timeout_ms).await?;
    tx.query_typed(LOCK_FOLD, &[(&names, Type::TEXT_ARRAY)])
        .await?;
    let n = tx
        .execute_typed(
            FOLD_CANDLES,
            &[
                (&names, Type::TEXT_ARRAY),
                (&seqs, Type::INT8_ARRAY),
                (&times, Type::TIMESTAMPTZ_ARRAY),
                (&prices, Type::FLOAT8_ARRAY),
                (&amounts, Type::FLOAT8_ARRAY),
                (&resolutions, Type::INT4_ARRAY),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Recomputes every candle of `instrument` whose bucket overlaps `[from, to]`
/// from the `trades` table (after trades arrived out of order, by gap repair).
const RECOMPUTE_CANDLES: &str = "\
WITH r AS (SELECT unnest($4::int4[]) AS m),
span AS (
    SELECT r.m,
           to_timestamp(floor(extract(epoch FROM $2::timestamptz) / (r.m * 60)) * (r.m * 60)) AS lo,
           to_timestamp(floor(extract(epoch FROM $3::timestamptz) / (r.m * 60)) * (r.m * 60) + r.m * 60) AS hi
    FROM r
),
b AS (
    SELECT s.m, t.trade_seq AS seq, t.price, t.amount,
           to_timestamp(floor(extract(epoch FROM t.ts) / (s.m * 60)) * (s.m * 60)) AS bucket
    FROM span s JOIN trades t
      ON t.instrument_name = $1 AND t.ts >= s.lo AND t.ts < s.hi
)
INSERT INTO candles (instrument_name, resolution_minutes, bucket, open, high, low, close,
                     volume, trades, last_trade_seq)
SELECT $1, m, bucket, (array_agg(price ORDER BY seq))[1], max(price), min(price),
       (array_agg(price ORDER BY seq DESC))[1], sum(amount), count(*), max(seq)
FROM b GROUP BY m, bucket
ON CONFLICT (instrument_name, resolution_minutes, bucket) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, trades = excluded.trades,
    last_trade_seq = greatest(candles.last_trade_seq, excluded.last_trade_seq),
    updated_at = now()";

pub(super) async fn recompute_candles(
    client: &mut Client,
    timeout_ms: u128,
    instrument: &str,
    from: SystemTime,
    to: SystemTime,
    resolutions: &[i32],
) -> Result<u64, tokio_postgres::Error> {
    let tx = begin(client, timeout_ms).await?;
    let names = [instrument];
    tx.query_typed(LOCK_FOLD, &[(&&names[..], Type::TEXT_ARRAY)])
        .await?;
    let n = tx
        .execute_typed(
            RECOMPUTE_CANDLES,
            &[
                (&instrument, Type::TEXT),
                (&from, Type::TIMESTAMPTZ),
                (&to, Type::TIMESTAMPTZ),
                (&resolutions, Type::INT4_ARRAY),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Marks `currency`'s instruments of `kinds` that are not in `keep` inactive.
pub(super) async fn deactivate_instruments(
    client: &mut Client,
    currency: &str,
    kinds: &[String],
    keep: &[String],
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute_typed(
            "UPDATE instruments SET is_active = false, updated_at = now()
             WHERE base_currency = $1 AND kind = ANY($2) AND is_active
               AND NOT (instrument_name = ANY($3))",
            &[
                (&currency, Type::TEXT),
                (&kinds, Type::TEXT_ARRAY),
                (&keep, Type::TEXT_ARRAY),
            ],
        )
        .await
}

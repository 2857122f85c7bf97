//! The SQL behind each PgActor operation. Every statement is sent with
//! `execute_typed`/`query_typed` (unnamed statements only), so nothing outlives
//! its checkout and PgBouncer's transaction pooling works.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::market::{Candle, Instrument, Trade};

use super::executor::begin;
use super::Retained;

const INSERT_TRADES: &str = "\
INSERT INTO trades (instrument_name, trade_seq, trade_id, ts, price, amount, direction,
                    tick_direction, mark_price, index_price, iv, liquidation)
SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::timestamptz[], $5::float8[],
                     $6::float8[], $7::text[], $8::int2[], $9::float8[], $10::float8[],
                     $11::float8[], $12::text[])
ON CONFLICT (instrument_name, trade_seq) DO NOTHING";

/// Inserts trades in one statement; returns how many were new.
pub(super) async fn insert_trades(
    client: &mut Client,
    timeout_ms: u128,
    trades: &[Trade],
) -> Result<u64, tokio_postgres::Error> {
    let names: Vec<&str> = trades.iter().map(|t| t.instrument_name.as_str()).collect();
    let seqs: Vec<i64> = trades.iter().map(|t| t.trade_seq).collect();
    let ids: Vec<&str> = trades.iter().map(|t| t.trade_id.as_str()).collect();
    let times: Vec<SystemTime> = trades.iter().map(|t| t.timestamp).collect();
    let prices: Vec<f64> = trades.iter().map(|t| t.price).collect();
    let amounts: Vec<f64> = trades.iter().map(|t| t.amount).collect();
    let directions: Vec<&str> = trades.iter().map(|t| t.direction.as_str()).collect();
    let ticks: Vec<i16> = trades.iter().map(|t| t.tick_direction).collect();
    let marks: Vec<f64> = trades.iter().map(|t| t.mark_price).collect();
    let indexes: Vec<f64> = trades.iter().map(|t| t.index_price).collect();
    let ivs: Vec<Option<f64>> = trades.iter().map(|t| t.iv).collect();
    let liquidations: Vec<Option<&str>> = trades.iter().map(|t| t.liquidation.as_deref()).collect();
    let tx = begin(client, timeout_ms).await?;
    let inserted = tx
        .execute_typed(
            INSERT_TRADES,
            &[
                (&names, Type::TEXT_ARRAY),
                (&seqs, Type::INT8_ARRAY),
                (&ids, Type::TEXT_ARRAY),
                (&times, Type::TIMESTAMPTZ_ARRAY),
                (&prices, Type::FLOAT8_ARRAY),
                (&amounts, Type::FLOAT8_ARRAY),
                (&directions, Type::TEXT_ARRAY),
                (&ticks, Type::INT2_ARRAY),
                (&marks, Type::FLOAT8_ARRAY),
                (&indexes, Type::FLOAT8_ARRAY),
                (&ivs, Type::FLOAT8_ARRAY),
                (&liquidations, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(inserted)
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
                     volume, trades)
SELECT * FROM UNNEST($1::text[], $2::int4[], $3::timestamptz[], $4::float8[], $5::float8[],
                     $6::float8[], $7::float8[], $8::float8[], $9::int8[])
ON CONFLICT (instrument_name, resolution_minutes, bucket) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, trades = excluded.trades, updated_at = now()";

/// Inserts or replaces candles; a bucket given twice keeps its last version.
pub(super) async fn upsert_candles(
    client: &mut Client,
    timeout_ms: u128,
    candles: &[Candle],
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

//! Trades folded into candles, each trade once (the analyzer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustc_hash::{FxHashMap, FxHashSet};

use tokio_postgres::{Client, Transaction};

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
    /// Cluster mode: the fencing token this analyzer holds each instrument of
    /// the batch with; empty: no fence.
    pub fences: Arc<[(String, i64)]>,
}

impl Operation for FoldCandles {
    /// Candle rows changed; `None`: a later analyzer took an instrument of the
    /// batch over, and nothing was folded.
    type Output = Option<u64>;
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
    ) -> Result<Option<u64>, tokio_postgres::Error> {
        fold_candles(
            client,
            pg.timeout_ms(),
            &self.trades,
            &self.resolutions,
            &self.fences,
        )
        .await
    }
}

impl PgClient {
    /// Folds trades into candles of `resolutions` (minutes), each trade once.
    pub async fn fold_candles(
        &self,
        trades: Arc<[Trade]>,
        resolutions: Arc<[i32]>,
    ) -> Result<u64, PgError> {
        let folded = self
            .run(FoldCandles {
                trades,
                resolutions,
                fences: Arc::from([]),
            })
            .await?;
        Ok(folded.unwrap_or(0))
    }

    /// As [`fold_candles`](Self::fold_candles), under `fences` (each
    /// instrument's token): `None`, nothing folded, once a later token is
    /// stored for any of them.
    pub async fn fold_candles_fenced(
        &self,
        trades: Arc<[Trade]>,
        resolutions: Arc<[i32]>,
        fences: Arc<[(String, i64)]>,
    ) -> Result<Option<u64>, PgError> {
        self.run(FoldCandles {
            trades,
            resolutions,
            fences,
        })
        .await
    }

    /// Refuses, from now on, every fold of `instrument` under a token below
    /// `token`; waits for a fold in flight (the fold lock).
    pub async fn raise_fold_fence(&self, instrument: &str, token: i64) -> Result<(), PgError> {
        self.run(RaiseFence {
            instrument: instrument.to_owned(),
            token,
        })
        .await
    }
}

/// Raises an instrument's fold fence.
#[derive(Clone, Debug)]
pub struct RaiseFence {
    /// The instrument.
    pub instrument: String,
    /// The new taker's token.
    pub token: i64,
}

impl Operation for RaiseFence {
    type Output = ();
    const NAME: &'static str = "raise_fold_fence";

    fn summary(&self) -> String {
        format!("{} to {}", self.instrument, self.token)
    }
}

const RAISE_FENCE: &str = "\
INSERT INTO fold_fences (instrument_name, token) VALUES ($1, $2)
ON CONFLICT (instrument_name) DO UPDATE SET
    token = greatest(fold_fences.token, excluded.token),
    raised_at = now()";

impl PgOp for RaiseFence {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<(), tokio_postgres::Error> {
        let instruments = [self.instrument.as_str()];
        write_candles(
            client,
            pg.timeout_ms(),
            &instruments,
            RAISE_FENCE,
            &[(&self.instrument, Type::TEXT), (&self.token, Type::INT8)],
        )
        .await
        .map(drop)
    }
}

/// The instruments of a batch whose fence is above the batch's token.
const FENCED: &str = "\
SELECT x.name FROM unnest($1::text[], $2::int8[]) AS x(name, token)
JOIN fold_fences f ON f.instrument_name = x.name
WHERE f.token > x.token";

/// The candles a batch touches that exist already, with the last trade each
/// holds: trades at or before it were folded by an earlier delivery. `$4`
/// carries every trade's time, so that PostgreSQL refuses a time it cannot
/// store (22008) exactly as the distributor's insert does, and the consumer
/// dead-letters that trade alone.
const FOLDED_UP_TO: &str = "\
SELECT k.i, c.last_trade_seq
FROM unnest($1::text[], $2::int4[], $3::timestamptz[]) WITH ORDINALITY AS k(name, m, bucket, i)
JOIN candles c
  ON c.instrument_name = k.name AND c.resolution_minutes = k.m AND c.bucket = k.bucket
WHERE $4::timestamptz[] IS NOT NULL";

/// The batch's fresh trades, already aggregated per candle, merged into the
/// stored candles (the open of an existing candle stays; its close is the
/// batch's last trade, which is later than any it holds).
const MERGE_CANDLES: &str = "\
INSERT INTO candles (instrument_name, resolution_minutes, bucket, open, high, low, close,
                     volume, trades, last_trade_seq)
SELECT * FROM unnest($1::text[], $2::int4[], $3::timestamptz[], $4::float8[], $5::float8[],
                     $6::float8[], $7::float8[], $8::float8[], $9::int8[], $10::int8[])
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

/// Takes the fold lock of each of `instruments` for the rest of `tx`: folding
/// and recomputing never interleave on one instrument.
async fn lock_fold(
    tx: &Transaction<'_>,
    instruments: &[&str],
) -> Result<(), tokio_postgres::Error> {
    tx.query_typed(LOCK_FOLD, &[(&instruments, Type::TEXT_ARRAY)])
        .await
        .map(drop)
}

/// Runs one candle write in a transaction that first takes the fold lock of
/// each of `instruments`.
pub(super) async fn write_candles(
    client: &mut Client,
    timeout_ms: u128,
    instruments: &[&str],
    statement: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<u64, tokio_postgres::Error> {
    let tx = begin(client, timeout_ms).await?;
    lock_fold(&tx, instruments).await?;
    let n = tx.execute_typed(statement, params).await?;
    tx.commit().await?;
    Ok(n)
}

/// A candle's key: instrument, resolution in minutes, bucket start in seconds
/// since the epoch.
type Key<'t> = (&'t str, i32, i64);

/// What a batch adds to one candle.
#[derive(Debug)]
struct Partial {
    first_seq: i64,
    open: f64,
    high: f64,
    low: f64,
    last_seq: i64,
    close: f64,
    volume: f64,
    trades: i64,
}

/// The start of the `minutes` bucket holding `at`, in seconds since the epoch,
/// as PostgreSQL's `floor(extract(epoch FROM ts) / (m * 60)) * (m * 60)` gives it
/// (timestamps are stored to the microsecond).
fn bucket_of(at: SystemTime, minutes: i32) -> i64 {
    let micros = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    };
    let width = i64::from(minutes) * 60;
    micros.div_euclid(width * 1_000_000) * width
}

/// A bucket start (seconds since the epoch) as a time.
fn from_secs(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// Folds a batch into its candles in one transaction under the fold lock: one
/// query learns how far each touched candle was folded, the batch's fresh
/// trades (each trade once, however often it was delivered) are aggregated
/// here, and one statement merges the few resulting rows. PostgreSQL sees a
/// row per candle, not per trade and resolution.
async fn fold_candles(
    client: &mut Client,
    timeout_ms: u128,
    trades: &[Trade],
    resolutions: &[i32],
    fences: &[(String, i64)],
) -> Result<Option<u64>, tokio_postgres::Error> {
    // Per trade: a hash made for short keys.
    let mut seen = FxHashSet::with_capacity_and_hasher(trades.len(), Default::default());
    let unique: Vec<&Trade> = trades
        .iter()
        .filter(|t| seen.insert((t.instrument_name.as_str(), t.trade_seq)))
        .collect();
    // Each trade with each candle it belongs to, computed once.
    let keyed: Vec<(&Trade, Key<'_>)> = unique
        .iter()
        .flat_map(|&t| {
            let name = t.instrument_name.as_str();
            resolutions
                .iter()
                .map(move |&m| (t, (name, m, bucket_of(t.timestamp, m))))
        })
        .collect();
    let touched: Vec<Key<'_>> = keyed
        .iter()
        .map(|&(_, key)| key)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if touched.is_empty() {
        return Ok(Some(0));
    }
    let names: Vec<&str> = touched.iter().map(|k| k.0).collect();
    let minutes: Vec<i32> = touched.iter().map(|k| k.1).collect();
    let buckets: Vec<SystemTime> = touched.iter().map(|k| from_secs(k.2)).collect();
    let times: Vec<SystemTime> = unique.iter().map(|t| t.timestamp).collect();
    let tx = begin(client, timeout_ms).await?;
    lock_fold(&tx, &names).await?;
    if !fences.is_empty() {
        let (fenced_names, tokens): (Vec<&str>, Vec<i64>) =
            fences.iter().map(|(n, t)| (n.as_str(), *t)).unzip();
        let fenced = tx
            .query_typed(
                FENCED,
                &[
                    (&fenced_names, Type::TEXT_ARRAY),
                    (&tokens, Type::INT8_ARRAY),
                ],
            )
            .await?;
        if !fenced.is_empty() {
            tx.rollback().await?;
            return Ok(None);
        }
    }
    let rows = tx
        .query_typed(
            FOLDED_UP_TO,
            &[
                (&names, Type::TEXT_ARRAY),
                (&minutes, Type::INT4_ARRAY),
                (&buckets, Type::TIMESTAMPTZ_ARRAY),
                (&times, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
        .await?;
    // Each row names its key by position (from 1) in the arrays sent.
    let mut folded: FxHashMap<Key<'_>, i64> =
        FxHashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for row in &rows {
        let at: i64 = row.try_get(0)?;
        let key = usize::try_from(at - 1).ok().and_then(|i| touched.get(i));
        if let Some(&key) = key {
            folded.insert(key, row.try_get(1)?);
        }
    }
    let mut partials: BTreeMap<Key<'_>, Partial> = BTreeMap::new();
    for &(trade, key) in &keyed {
        if folded
            .get(&key)
            .is_some_and(|&last| trade.trade_seq <= last)
        {
            continue;
        }
        let (seq, price) = (trade.trade_seq, trade.price);
        let p = partials.entry(key).or_insert(Partial {
            first_seq: seq,
            open: price,
            high: price,
            low: price,
            last_seq: seq,
            close: price,
            volume: 0.0,
            trades: 0,
        });
        if seq < p.first_seq {
            (p.first_seq, p.open) = (seq, price);
        }
        if seq > p.last_seq {
            (p.last_seq, p.close) = (seq, price);
        }
        p.high = p.high.max(price);
        p.low = p.low.min(price);
        p.volume += trade.amount;
        p.trades += 1;
    }
    let n = if partials.is_empty() {
        0
    } else {
        let names: Vec<&str> = partials.keys().map(|k| k.0).collect();
        let minutes: Vec<i32> = partials.keys().map(|k| k.1).collect();
        let buckets: Vec<SystemTime> = partials.keys().map(|k| from_secs(k.2)).collect();
        let column = |f: fn(&Partial) -> f64| partials.values().map(f).collect::<Vec<f64>>();
        let (open, high, low, close, volume) = (
            column(|p| p.open),
            column(|p| p.high),
            column(|p| p.low),
            column(|p| p.close),
            column(|p| p.volume),
        );
        let counts: Vec<i64> = partials.values().map(|p| p.trades).collect();
        let lasts: Vec<i64> = partials.values().map(|p| p.last_seq).collect();
        tx.execute_typed(
            MERGE_CANDLES,
            &[
                (&names, Type::TEXT_ARRAY),
                (&minutes, Type::INT4_ARRAY),
                (&buckets, Type::TIMESTAMPTZ_ARRAY),
                (&open, Type::FLOAT8_ARRAY),
                (&high, Type::FLOAT8_ARRAY),
                (&low, Type::FLOAT8_ARRAY),
                (&close, Type::FLOAT8_ARRAY),
                (&volume, Type::FLOAT8_ARRAY),
                (&counts, Type::INT8_ARRAY),
                (&lasts, Type::INT8_ARRAY),
            ],
        )
        .await?
    };
    tx.commit().await?;
    Ok(Some(n))
}

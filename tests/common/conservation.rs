//! What conservation tests check after their faults: every trade the simulator
//! made is stored exactly once (after gap repair), and candles equal the SQL
//! aggregate of the stored trades.

use std::time::Duration;

use keel::config::Config;
use keel::{tree, Runtime, TaskOutcome};
use keel_deribit::sim::SimHandle;
use tokio_postgres::Client;

/// `(count, min, max)` of an instrument's stored `trade_seq`s.
pub async fn stored(client: &Client, instrument: &str) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*), coalesce(min(trade_seq), 0), coalesce(max(trade_seq), 0)
             FROM trades WHERE instrument_name = $1",
            &[&instrument],
        )
        .await
        .expect("count stored trades");
    (row.get(0), row.get(1), row.get(2))
}

/// Stored trades of all `instruments`.
pub async fn total(client: &Client, instruments: &[&str]) -> i64 {
    let mut total = 0;
    for instrument in instruments {
        total += stored(client, instrument).await.0;
    }
    total
}

/// Runs `keel task backfill --gaps` in a tree of its own, as the scheduler
/// would, and returns how it ended.
pub async fn repair(config: &Config, within: Duration) -> TaskOutcome {
    let runtime = Runtime::new(config.supervisor.clone());
    let specs = tree::task(
        config,
        runtime.registry(),
        &tree::TaskRequest::Backfill(tree::BackfillRequest::gaps()),
    )
    .expect("valid arguments");
    let repair = specs
        .into_iter()
        .fold(runtime, Runtime::child)
        .start()
        .await
        .expect("the repair tree starts");
    let outcome = tokio::time::timeout(within, repair.task_outcome(tree::GAP_REPAIR))
        .await
        .expect("gap repair finished in time");
    repair.shutdown().await;
    outcome
}

/// Asserts every instrument holds exactly trades `1..=last` of the simulator,
/// each once, and returns the total.
pub async fn assert_exactly_once(client: &Client, sim: &SimHandle, instruments: &[&str]) -> i64 {
    let stats = sim.stats();
    let mut all = 0;
    for instrument in instruments {
        let last = stats.instruments[*instrument].last_trade_seq;
        let (count, min, max) = stored(client, instrument).await;
        assert_eq!(
            (min, max, count),
            (1, last, last),
            "{instrument}: exactly trades 1..={last}, each once"
        );
        all += count;
    }
    all
}

/// Candles that differ from the SQL aggregate of the stored trades (for the
/// default resolutions 1m, 5m, 1h).
pub async fn candles_mismatched(client: &Client) -> i64 {
    client
        .query_one(
            "WITH sql AS (
                 SELECT instrument_name, r.m,
                        to_timestamp(floor(extract(epoch FROM ts) / (r.m * 60)) * (r.m * 60)) AS bucket,
                        (array_agg(price ORDER BY trade_seq))[1] AS open, max(price) AS high,
                        min(price) AS low, (array_agg(price ORDER BY trade_seq DESC))[1] AS close,
                        sum(amount) AS volume, count(*) AS trades
                 FROM trades CROSS JOIN (VALUES (1), (5), (60)) AS r(m)
                 GROUP BY instrument_name, r.m, bucket)
             SELECT count(*) FROM sql FULL JOIN candles c
               ON c.instrument_name = sql.instrument_name AND c.resolution_minutes = sql.m
              AND c.bucket = sql.bucket
             WHERE c.bucket IS NULL OR sql.bucket IS NULL
                OR (c.open, c.high, c.low, c.close, c.trades) <> (sql.open, sql.high, sql.low, sql.close, sql.trades)
                OR abs(c.volume - sql.volume) > 1e-6",
            &[],
        )
        .await
        .expect("compare candles")
        .get(0)
}

//! Candles recomputed from stored trades after trades arrived late (gap repair).

use std::sync::Arc;
use std::time::SystemTime;

use tokio_postgres::Client;

use super::fold_candles::write_candles;

use tokio_postgres::types::{ToSql, Type};

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Recomputes an instrument's candles over a time span from `trades`; answers
/// how many candle rows changed.
#[derive(Clone, Debug)]
pub struct RecomputeCandles {
    /// The instrument whose candles are recomputed from its stored trades.
    pub instrument: String,
    /// Start of the span.
    pub from: SystemTime,
    /// End of the span.
    pub to: SystemTime,
    /// Resolutions in minutes.
    pub resolutions: Arc<[i32]>,
}

impl Operation for RecomputeCandles {
    type Output = u64;
    const NAME: &'static str = "recompute_candles";

    fn summary(&self) -> String {
        let from = keel_market::describe_time(self.from);
        let to = keel_market::describe_time(self.to);
        format!("{} {from}..{to}", self.instrument)
    }
}

impl PgOp for RecomputeCandles {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        let (name, from, to) = (self.instrument.as_str(), self.from, self.to);
        recompute_candles(client, pg.timeout_ms(), name, from, to, &self.resolutions).await
    }
}

impl PgClient {
    /// Recomputes `instrument`'s candles over `[from, to]` from the stored trades.
    pub async fn recompute_candles(
        &self,
        instrument: &str,
        from: SystemTime,
        to: SystemTime,
        resolutions: Arc<[i32]>,
    ) -> Result<u64, PgError> {
        let instrument = instrument.to_owned();
        self.run(RecomputeCandles {
            instrument,
            from,
            to,
            resolutions,
        })
        .await
    }
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

async fn recompute_candles(
    client: &mut Client,
    timeout_ms: u128,
    instrument: &str,
    from: SystemTime,
    to: SystemTime,
    resolutions: &[i32],
) -> Result<u64, tokio_postgres::Error> {
    let params: [(&(dyn ToSql + Sync), Type); 4] = [
        (&instrument, Type::TEXT),
        (&from, Type::TIMESTAMPTZ),
        (&to, Type::TIMESTAMPTZ),
        (&resolutions, Type::INT4_ARRAY),
    ];
    write_candles(
        client,
        timeout_ms,
        &[instrument],
        RECOMPUTE_CANDLES,
        &params,
    )
    .await
}

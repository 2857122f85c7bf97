//! Gap repair (`keel task backfill --gaps`): fills every recorded trade gap, every
//! hole in the stored sequence, and the tail between the newest stored trade and
//! the exchange's newest, from the exchange's history paged by `trade_seq`, then
//! clears what it repaired.
//!
//! Resumable: inserts are idempotent and a gap is cleared only once filled, so a
//! killed run is simply run again.

use std::sync::Arc;
use std::time::SystemTime;

use super::exchange_http;
use super::task::{TaskError, TaskWork};
use crate::resource::pg::PgClient;
use crate::resource::RideOut;
use keel_core::child::Incarnation;
use keel_core::delay::BackoffConfig;
use keel_deribit::http::{HttpClient, HttpError};
use keel_deribit::model::TradesPage;
use keel_market::{Gap, Trade};

/// Trades per history request (Deribit's maximum).
const PAGE: usize = 1000;
/// Attempts at one page while the exchange says "too many requests".
const RATE_LIMIT_ATTEMPTS: u32 = 8;

/// Gap repair's settings; the task is `RunOnce<GapRepair>`.
#[derive(Clone, Debug)]
pub struct GapRepair {
    /// PgActor, reached by name in the tree's registry.
    pub pg: PgClient,
    /// The exchange's HTTP base URL.
    pub http_url: String,
    /// A CA to trust for `https://` besides the public roots (`[receiver] ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Instruments whose tail is checked against the exchange.
    pub instruments: Vec<String>,
    /// Candle resolutions (minutes) recomputed over repaired spans.
    pub resolutions: Arc<[i32]>,
}

impl TaskWork for GapRepair {
    async fn run(self, own: Incarnation) -> Result<String, TaskError> {
        repair(&self, &own)
            .await
            .map(|stored| format!("gaps repaired, {stored} trades stored"))
            .map_err(|e| match e {
                RepairError::Pg(e) => e.into(),
                RepairError::Exchange(e) => e.into(),
                // The same history would be served again: not worth a restart.
                e @ RepairError::NoProgress { .. } => TaskError::unrecoverable(e.to_string()),
            })
    }
}

/// Why a repair run failed (the supervisor retries it).
#[derive(Debug, thiserror::Error)]
enum RepairError {
    #[error(transparent)]
    Pg(#[from] crate::resource::pg::PgError),
    #[error(transparent)]
    Exchange(#[from] HttpError),
    /// The exchange answered a page with nothing at or after what was asked.
    #[error("the exchange's history of {instrument} does not move forward: asked from trade_seq {asked}, got up to {last}")]
    NoProgress {
        instrument: String,
        asked: i64,
        last: i64,
    },
}

async fn repair(args: &GapRepair, own: &Incarnation) -> Result<u64, RepairError> {
    let probe = &own.probe;
    let pg = args.pg.clone().riding_out(RideOut::new(own));
    let exchange = exchange_http(&args.http_url, args.ca_file.as_deref())?;
    let mut gaps = pg.list_gaps().await?;
    for instrument in &args.instruments {
        // Holes nobody recorded (a Redis that lost entries, say) are found in the
        // table itself.
        gaps.extend(pg.find_holes(instrument).await?);
        let newest: TradesPage = call(&exchange, instrument, None, None, 1, "desc").await?;
        let (Some(newest), Some(stored)) = (newest.trades.first(), pg.max_seq(instrument).await?)
        else {
            continue;
        };
        if newest.instrument_name != *instrument
            || crate::service::receiver::check_values(&newest.view()).is_err()
        {
            tracing::warn!(%instrument, trade_seq = newest.trade_seq,
                "The exchange's newest trade is not believable; not repairing up to it.");
            continue;
        }
        if newest.trade_seq > stored {
            gaps.push(Gap {
                instrument_name: instrument.clone(),
                from_seq: stored + 1,
                to_seq: newest.trade_seq,
            });
        }
    }
    // Recorded gaps, holes and the tail overlap; each trade is fetched once.
    let gaps = keel_market::gap::merge(gaps);
    let total = gaps.len();
    let mut stored = 0;
    for (done, gap) in gaps.into_iter().enumerate() {
        let (new, span) = fill(&exchange, &pg, &gap).await?;
        stored += new;
        // Candles folded in before these trades arrived are rebuilt from the table.
        if let Some((from, to)) = span {
            let resolutions = Arc::clone(&args.resolutions);
            pg.recompute_candles(&gap.instrument_name, from, to, resolutions)
                .await?;
        }
        // Tail gaps were never recorded; deleting them is a no-op.
        pg.clear_gap(gap.clone()).await?;
        probe.set_detail(
            "progress",
            serde_json::json!({"gaps_done": done + 1, "gaps": total, "trades_stored": stored}),
        );
        tracing::info!(instrument = %gap.instrument_name, from = gap.from_seq, to = gap.to_seq, done = done + 1, total, "Gap repaired.");
    }
    Ok(stored)
}

/// The times of the first and last trade a repair stored.
type Span = Option<(SystemTime, SystemTime)>;

/// Pages through `gap` by `trade_seq`; returns how many trades were new and the
/// time span they cover.
async fn fill(exchange: &HttpClient, pg: &PgClient, gap: &Gap) -> Result<(u64, Span), RepairError> {
    let mut next = gap.from_seq;
    let mut stored = 0;
    let mut span: Span = None;
    while next <= gap.to_seq {
        let page = call(
            exchange,
            &gap.instrument_name,
            Some(next),
            Some(gap.to_seq),
            PAGE,
            "asc",
        )
        .await?;
        // History is exchange input like the stream: only this instrument's
        // trades in the range asked for, with sane values, are stored.
        let wanted = |t: &&keel_deribit::model::PublicTrade| {
            t.instrument_name == gap.instrument_name
                && (next..=gap.to_seq).contains(&t.trade_seq)
                && crate::service::receiver::check_values(&t.view()).is_ok()
        };
        let trades: Vec<Trade> = page
            .trades
            .iter()
            .filter(wanted)
            .filter_map(|t| t.to_trade().ok())
            .collect();
        let turned_away = page.trades.len() - trades.len();
        if turned_away > 0 {
            tracing::warn!(instrument = %gap.instrument_name, turned_away,
                "History page held trades outside the gap or with bad values; skipped.");
        }
        let ours = page
            .trades
            .iter()
            .filter(|t| t.instrument_name == gap.instrument_name);
        let Some(last) = ours.map(|t| t.trade_seq).max() else {
            tracing::error!(instrument = %gap.instrument_name, from = next, to = gap.to_seq,
                "The exchange no longer has these trades; they cannot be repaired.");
            break;
        };
        // A page that does not move forward would be asked for again forever.
        if last < next {
            return Err(RepairError::NoProgress {
                instrument: gap.instrument_name.clone(),
                asked: next,
                last,
            });
        }
        for t in &trades {
            span = Some(match span {
                None => (t.timestamp, t.timestamp),
                Some((lo, hi)) => (lo.min(t.timestamp), hi.max(t.timestamp)),
            });
        }
        stored += pg.insert_trades(trades.into()).await?;
        next = last + 1;
    }
    Ok((stored, span))
}

/// `get_last_trades_by_instrument`, backing off while the exchange says 10028.
async fn call(
    exchange: &HttpClient,
    instrument: &str,
    start_seq: Option<i64>,
    end_seq: Option<i64>,
    count: usize,
    sorting: &str,
) -> Result<TradesPage, HttpError> {
    let mut params = vec![
        ("instrument_name", instrument.to_owned()),
        ("count", count.to_string()),
        ("sorting", sorting.to_owned()),
    ];
    if let Some(s) = start_seq {
        params.push(("start_seq", s.to_string()));
    }
    if let Some(e) = end_seq {
        params.push(("end_seq", e.to_string()));
    }
    let mut backoff = BackoffConfig::default().sequence();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match exchange
            .public("get_last_trades_by_instrument", &params)
            .await
        {
            Err(e) if e.is_rate_limit() && attempt < RATE_LIMIT_ATTEMPTS => {
                let delay = backoff.next_delay();
                tracing::warn!(?delay, "The exchange asks to slow down; waiting.");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

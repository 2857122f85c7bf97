//! Candle backfill (`keel task backfill --instrument X --from T --to T
//! [--resolution R]`): the exchange's chart data, paged by time, upserted.
//!
//! Backfilled candles come from the exchange, not from folded trades: they are
//! stored with `trades = 0` and a `last_trade_seq` no trade reaches, so the
//! analyzer never folds trades on top of them. Only closed buckets are filled.

use std::time::SystemTime;

use super::exchange_http;
use super::task::{TaskError, TaskWork};
use crate::resource::pg::PgClient;
use crate::resource::RideOut;
use keel_core::child::Incarnation;
use keel_deribit::model::{from_ms, to_ms, TradingViewChart};
use keel_market::{Candle, Resolution};

/// Bars per request.
const BARS_PER_PAGE: u64 = 5_000;

/// The backfill's settings; the task is `RunOnce<CandleBackfill>`.
#[derive(Clone, Debug)]
pub struct CandleBackfill {
    /// The instrument whose candles are fetched.
    pub instrument: String,
    /// Start of the range.
    pub from: SystemTime,
    /// End of the range (clamped to the last closed bucket).
    pub to: SystemTime,
    /// Candle length.
    pub resolution: Resolution,
    /// PgActor, reached by name in the tree's registry.
    pub pg: PgClient,
    /// The exchange's HTTP base URL.
    pub http_url: String,
    /// A CA to trust for `https://` besides the public roots (`[receiver] ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Deribit's spelling of a resolution, if it offers it.
pub fn api_resolution(r: Resolution) -> Option<String> {
    let minutes = r.as_minutes();
    let text = if minutes == 1440 {
        "1D".to_owned()
    } else {
        minutes.to_string()
    };
    keel_deribit::channel::RESOLUTIONS
        .contains(&text.as_str())
        .then_some(text)
}

impl TaskWork for CandleBackfill {
    async fn run(self, own: Incarnation) -> Result<String, TaskError> {
        let probe = &own.probe;
        let resolution = api_resolution(self.resolution)
            .ok_or_else(|| format!("the exchange has no {} candles", self.resolution))?;
        let step = self.resolution.duration().as_millis() as u64;
        let exchange = exchange_http(&self.http_url, self.ca_file.as_deref())?;
        let pg = self.pg.clone().riding_out(RideOut::new(&own));
        let now = to_ms(SystemTime::now());
        let closed_until = now - now % step;
        let (start, end) = (
            to_ms(self.from),
            to_ms(self.to).min(closed_until.saturating_sub(1)),
        );
        let mut cursor = start;
        let mut stored = 0;
        while cursor <= end {
            let page_end = (cursor + BARS_PER_PAGE * step - 1).min(end);
            let chart: TradingViewChart = exchange
                .public(
                    "get_tradingview_chart_data",
                    &[
                        ("instrument_name", self.instrument.clone()),
                        ("start_timestamp", cursor.to_string()),
                        ("end_timestamp", page_end.to_string()),
                        ("resolution", resolution.clone()),
                    ],
                )
                .await?;
            let candles: Vec<Candle> = (0..chart.ticks.len())
                .filter(|&i| chart.ticks[i] + step <= closed_until)
                .map(|i| Candle {
                    instrument_name: self.instrument.clone(),
                    resolution: self.resolution,
                    bucket: from_ms(chart.ticks[i]),
                    open: chart.open[i],
                    high: chart.high[i],
                    low: chart.low[i],
                    close: chart.close[i],
                    volume: chart.volume[i],
                    trades: 0,
                })
                .collect();
            if !candles.is_empty() {
                stored += pg.upsert_exchange_candles(candles.into()).await?;
            }
            probe.set_detail(
                "progress",
                serde_json::json!({"from_ms": start, "at_ms": page_end, "until_ms": end, "candles": stored}),
            );
            tracing::info!(instrument = %self.instrument, until = page_end, candles = stored, "Backfill page stored.");
            cursor = page_end + 1;
        }
        Ok(format!(
            "{stored} {} candles of {} backfilled",
            self.resolution, self.instrument
        ))
    }
}

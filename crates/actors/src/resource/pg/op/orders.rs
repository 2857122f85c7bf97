//! The executor's orders, their state history and fills (`orders`,
//! `order_history`, `fills`).

use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::resource::pg::executor::begin;
use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// An order as first written, before anything is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct NewOrder {
    /// Client order id.
    pub label: String,
    /// Instrument name.
    pub instrument: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `limit` or `market`.
    pub order_type: String,
    /// Amount.
    pub amount: f64,
    /// Limit price.
    pub price: Option<f64>,
    /// Time in force.
    pub time_in_force: String,
    /// Post-only.
    pub post_only: bool,
    /// Reduce-only.
    pub reduce_only: bool,
    /// Initial state (`pending`, or `rejected` by Keel's own limits).
    pub state: String,
    /// Its rank.
    pub rank: i16,
    /// Keel's refusal, if it refused.
    pub reason: Option<String>,
    /// The request may not start after this (ms since the epoch).
    pub valid_until_ms: i64,
    /// The stream entry it came from.
    pub intent_id: String,
}

/// A change of an order's state, as the exchange reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderUpdate {
    /// Client order id.
    pub label: String,
    /// New state.
    pub state: String,
    /// Its rank: a state changes only to a higher rank (or, within a
    /// non-terminal rank, to a newer update or a larger fill).
    pub rank: i16,
    /// The exchange's order id.
    pub order_id: Option<String>,
    /// Filled so far.
    pub filled_amount: f64,
    /// Average fill price.
    pub average_price: Option<f64>,
    /// The exchange's `last_update_timestamp`.
    pub last_update_ms: i64,
    /// The exchange's error code, on a rejection.
    pub reject_code: Option<i64>,
    /// Why (a rejection, a cancel reason).
    pub reason: Option<String>,
}

/// One fill.
#[derive(Clone, Debug, PartialEq)]
pub struct FillRow {
    /// The exchange's trade id: fills are stored once each.
    pub trade_id: String,
    /// The order's label (absent for orders Keel did not place).
    pub label: Option<String>,
    /// The exchange's order id.
    pub order_id: String,
    /// Instrument.
    pub instrument: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Amount.
    pub amount: f64,
    /// Price.
    pub price: f64,
    /// Fee.
    pub fee: f64,
    /// Fee currency.
    pub fee_currency: String,
    /// `M` or `T`.
    pub liquidity: String,
    /// The trade's sequence number.
    pub trade_seq: i64,
    /// The exchange's timestamp.
    pub exchange_ms: i64,
}

/// An order not in a terminal state, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveOrder {
    /// What was recorded first.
    pub order: NewOrder,
    /// Its state now.
    pub state: String,
    /// The exchange's order id, once known.
    pub order_id: Option<String>,
    /// Filled so far.
    pub filled_amount: f64,
    /// Last update applied.
    pub last_update_ms: i64,
    /// Sends so far.
    pub sends: i32,
}

/// Records a new order (idempotent on its label): `None` when new, else the
/// state the label already has.
#[derive(Clone, Debug)]
pub struct RecordOrder(pub Arc<NewOrder>);

impl Operation for RecordOrder {
    type Output = Option<String>;
    const NAME: &'static str = "record_order";

    fn summary(&self) -> String {
        format!("{} {}", self.0.instrument, self.0.state)
    }
}

impl PgOp for RecordOrder {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<Option<String>, tokio_postgres::Error> {
        let o = &*self.0;
        let tx = begin(client, pg.timeout_ms()).await?;
        let params: [(&(dyn ToSql + Sync), Type); 14] = [
            (&o.label, Type::TEXT),
            (&o.instrument, Type::TEXT),
            (&o.side, Type::TEXT),
            (&o.order_type, Type::TEXT),
            (&o.amount, Type::FLOAT8),
            (&o.price, Type::FLOAT8),
            (&o.time_in_force, Type::TEXT),
            (&o.post_only, Type::BOOL),
            (&o.reduce_only, Type::BOOL),
            (&o.state, Type::TEXT),
            (&o.rank, Type::INT2),
            (&o.reason, Type::TEXT),
            (&o.valid_until_ms, Type::INT8),
            (&o.intent_id, Type::TEXT),
        ];
        let inserted = tx
            .query_typed(
                "INSERT INTO orders (label, instrument_name, side, order_type, amount, price,
                     time_in_force, post_only, reduce_only, state, state_rank, reason,
                     valid_until_ms, intent_id, reject_code)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                     CASE WHEN $10 = 'rejected' THEN 0 END)
                 ON CONFLICT (label) DO NOTHING
                 RETURNING label",
                &params,
            )
            .await?;
        let existing = if inserted.is_empty() {
            let row = tx
                .query_typed_one(
                    "SELECT state FROM orders WHERE label = $1",
                    &[(&o.label, Type::TEXT)],
                )
                .await?;
            Some(row.try_get::<_, String>(0)?)
        } else {
            tx.execute_typed(
                "INSERT INTO order_history (label, state, filled_amount, last_update_ms, reason)
                 VALUES ($1, $2, 0, 0, $3)",
                &[
                    (&o.label, Type::TEXT),
                    (&o.state, Type::TEXT),
                    (&o.reason, Type::TEXT),
                ],
            )
            .await?;
            None
        };
        tx.commit().await?;
        Ok(existing)
    }
}

/// Applies a state change if it moves the order forward; whether it did.
#[derive(Clone, Debug)]
pub struct UpdateOrder(pub Arc<OrderUpdate>);

impl Operation for UpdateOrder {
    type Output = bool;
    const NAME: &'static str = "update_order";

    fn summary(&self) -> String {
        self.0.state.clone()
    }
}

impl PgOp for UpdateOrder {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<bool, tokio_postgres::Error> {
        let u = &*self.0;
        let tx = begin(client, pg.timeout_ms()).await?;
        let params: [(&(dyn ToSql + Sync), Type); 9] = [
            (&u.label, Type::TEXT),
            (&u.state, Type::TEXT),
            (&u.rank, Type::INT2),
            (&u.order_id, Type::TEXT),
            (&u.filled_amount, Type::FLOAT8),
            (&u.average_price, Type::FLOAT8),
            (&u.last_update_ms, Type::INT8),
            (&u.reject_code, Type::INT8),
            (&u.reason, Type::TEXT),
        ];
        let rows = tx
            .query_typed(
                "WITH up AS (
                     UPDATE orders SET state = $2, state_rank = $3,
                         order_id = COALESCE($4, order_id),
                         filled_amount = GREATEST(filled_amount, $5),
                         average_price = COALESCE($6, average_price),
                         last_update_ms = GREATEST(last_update_ms, $7),
                         reject_code = COALESCE($8, reject_code),
                         reason = COALESCE($9, reason),
                         updated_at = now()
                     WHERE label = $1 AND (state_rank < $3
                         OR (state_rank = $3 AND $3 < 5
                             AND (last_update_ms < $7 OR filled_amount < $5)))
                     RETURNING label, state, filled_amount, last_update_ms, reason)
                 INSERT INTO order_history (label, state, filled_amount, last_update_ms, reason)
                 SELECT * FROM up RETURNING label",
                &params,
            )
            .await?;
        tx.commit().await?;
        Ok(!rows.is_empty())
    }
}

/// Records an amend the exchange accepted: the order's new amount and price.
#[derive(Clone, Debug)]
pub struct AmendOrder {
    /// Client order id.
    pub label: String,
    /// New amount.
    pub amount: f64,
    /// New price.
    pub price: Option<f64>,
}

impl Operation for AmendOrder {
    type Output = ();
    const NAME: &'static str = "amend_order";

    fn summary(&self) -> String {
        "1 order".into()
    }
}

impl PgOp for AmendOrder {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<(), tokio_postgres::Error> {
        let tx = begin(client, pg.timeout_ms()).await?;
        tx.execute_typed(
            "WITH up AS (
                 UPDATE orders SET amount = $2, price = COALESCE($3, price), updated_at = now()
                 WHERE label = $1
                 RETURNING label, state, filled_amount, last_update_ms)
             INSERT INTO order_history (label, state, filled_amount, last_update_ms, reason)
             SELECT label, state, filled_amount, last_update_ms,
                 'amended: ' || $2::text || ' @ ' || COALESCE($3::text, 'market') FROM up",
            &[
                (&self.label, Type::TEXT),
                (&self.amount, Type::FLOAT8),
                (&self.price, Type::FLOAT8),
            ],
        )
        .await?;
        tx.commit().await
    }
}

/// Counts a send of a label, with the request's new `valid_until`.
#[derive(Clone, Debug)]
pub struct MarkSent {
    /// Client order id.
    pub label: String,
    /// The request may not start after this.
    pub valid_until_ms: i64,
    /// This send's number (the first is 1): writing it twice counts it once.
    pub sends: i32,
}

impl Operation for MarkSent {
    type Output = ();
    const NAME: &'static str = "mark_sent";

    fn summary(&self) -> String {
        "1 order".into()
    }
}

impl PgOp for MarkSent {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<(), tokio_postgres::Error> {
        let tx = begin(client, pg.timeout_ms()).await?;
        // The first send moves `pending` to `sent`, and that is history too.
        tx.execute_typed(
            "WITH before AS (SELECT state_rank FROM orders WHERE label = $1),
             up AS (
                 UPDATE orders SET sends = GREATEST(sends, $3), valid_until_ms = $2,
                     state = CASE WHEN state_rank < 1 THEN 'sent' ELSE state END,
                     state_rank = GREATEST(state_rank, 1), updated_at = now()
                 WHERE label = $1
                 RETURNING label, state, filled_amount, last_update_ms)
             INSERT INTO order_history (label, state, filled_amount, last_update_ms)
             SELECT up.label, up.state, up.filled_amount, up.last_update_ms
             FROM up, before WHERE before.state_rank < 1",
            &[
                (&self.label, Type::TEXT),
                (&self.valid_until_ms, Type::INT8),
                (&self.sends, Type::INT4),
            ],
        )
        .await?;
        tx.commit().await
    }
}

/// Stores fills once each; answers the trade ids that were new.
#[derive(Clone, Debug)]
pub struct InsertFills(pub Arc<[FillRow]>);

impl Operation for InsertFills {
    type Output = Vec<String>;
    const NAME: &'static str = "insert_fills";

    fn summary(&self) -> String {
        format!("{} fills", self.0.len())
    }
}

impl PgOp for InsertFills {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        let tx = begin(client, pg.timeout_ms()).await?;
        let mut new = Vec::new();
        for f in self.0.iter() {
            let params: [(&(dyn ToSql + Sync), Type); 12] = [
                (&f.trade_id, Type::TEXT),
                (&f.label, Type::TEXT),
                (&f.order_id, Type::TEXT),
                (&f.instrument, Type::TEXT),
                (&f.side, Type::TEXT),
                (&f.amount, Type::FLOAT8),
                (&f.price, Type::FLOAT8),
                (&f.fee, Type::FLOAT8),
                (&f.fee_currency, Type::TEXT),
                (&f.liquidity, Type::TEXT),
                (&f.trade_seq, Type::INT8),
                (&f.exchange_ms, Type::INT8),
            ];
            let rows = tx
                .query_typed(
                    "INSERT INTO fills (trade_id, label, order_id, instrument_name, side, amount,
                         price, fee, fee_currency, liquidity, trade_seq, exchange_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (trade_id) DO NOTHING RETURNING trade_id",
                    &params,
                )
                .await?;
            if !rows.is_empty() {
                new.push(f.trade_id.clone());
            }
        }
        tx.commit().await?;
        Ok(new)
    }
}

/// Every order not in a terminal state.
#[derive(Clone, Debug)]
pub struct LiveOrders;

impl Operation for LiveOrders {
    type Output = Vec<LiveOrder>;
    const NAME: &'static str = "live_orders";

    fn summary(&self) -> String {
        "not terminal".into()
    }
}

impl PgOp for LiveOrders {
    async fn attempt(
        &self,
        client: &mut Client,
        _pg: &PgShared,
    ) -> Result<Vec<LiveOrder>, tokio_postgres::Error> {
        let rows = client
            .query_typed(
                "SELECT label, instrument_name, side, order_type, amount, price, time_in_force,
                     post_only, reduce_only, state, state_rank, reason, valid_until_ms,
                     COALESCE(intent_id, ''), order_id, filled_amount, last_update_ms, sends
                 FROM orders WHERE state_rank < 5 ORDER BY created_at",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(9)?;
                Ok(LiveOrder {
                    order: NewOrder {
                        label: r.try_get(0)?,
                        instrument: r.try_get(1)?,
                        side: r.try_get(2)?,
                        order_type: r.try_get(3)?,
                        amount: r.try_get(4)?,
                        price: r.try_get(5)?,
                        time_in_force: r.try_get(6)?,
                        post_only: r.try_get(7)?,
                        reduce_only: r.try_get(8)?,
                        state: state.clone(),
                        rank: r.try_get(10)?,
                        reason: r.try_get(11)?,
                        valid_until_ms: r.try_get(12)?,
                        intent_id: r.try_get(13)?,
                    },
                    state,
                    order_id: r.try_get(14)?,
                    filled_amount: r.try_get(15)?,
                    last_update_ms: r.try_get(16)?,
                    sends: r.try_get(17)?,
                })
            })
            .collect()
    }
}

/// Where to start reading an instrument's fills back from the exchange (ms):
/// a minute before the last fill stored (rereading a little costs nothing, as
/// fills are stored once by trade id), else the creation of the oldest order
/// on the instrument (no fill of Keel's can be older), else nothing to read.
#[derive(Clone, Debug)]
pub struct FillsFrom {
    /// Instrument name.
    pub instrument: String,
}

/// How far before the last stored fill [`FillsFrom`] starts.
const FILLS_OVERLAP_MS: i64 = 60_000;

impl Operation for FillsFrom {
    type Output = Option<i64>;
    const NAME: &'static str = "fills_from";

    fn summary(&self) -> String {
        self.instrument.clone()
    }
}

impl PgOp for FillsFrom {
    async fn attempt(
        &self,
        client: &mut Client,
        _pg: &PgShared,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let row = client
            .query_typed_one(
                "SELECT (SELECT max(exchange_ms) FROM fills WHERE instrument_name = $1),
                        (SELECT (extract(epoch FROM min(created_at)) * 1000)::bigint
                         FROM orders WHERE instrument_name = $1)",
                &[(&self.instrument, Type::TEXT)],
            )
            .await?;
        let last: Option<i64> = row.try_get(0)?;
        let oldest: Option<i64> = row.try_get(1)?;
        Ok(last.map(|ms| ms - FILLS_OVERLAP_MS).or(oldest))
    }
}

impl PgClient {
    /// Where to start reading `instrument`'s fills back (ms); `None`: nothing
    /// of Keel's can have traded there.
    pub async fn fills_from(&self, instrument: &str) -> Result<Option<i64>, PgError> {
        self.run(FillsFrom {
            instrument: instrument.to_owned(),
        })
        .await
    }

    /// Records a new order; `None` when new, else the label's state.
    pub async fn record_order(&self, order: NewOrder) -> Result<Option<String>, PgError> {
        self.run(RecordOrder(Arc::new(order))).await
    }

    /// Applies a state change if it moves the order forward.
    pub async fn update_order(&self, update: OrderUpdate) -> Result<bool, PgError> {
        self.run(UpdateOrder(Arc::new(update))).await
    }

    /// Records an accepted amend of `label`.
    pub async fn amend_order(
        &self,
        label: &str,
        amount: f64,
        price: Option<f64>,
    ) -> Result<(), PgError> {
        self.run(AmendOrder {
            label: label.to_owned(),
            amount,
            price,
        })
        .await
    }

    /// Counts a send of `label`.
    pub async fn mark_sent(
        &self,
        label: &str,
        valid_until_ms: i64,
        sends: u32,
    ) -> Result<(), PgError> {
        self.run(MarkSent {
            label: label.to_owned(),
            valid_until_ms,
            sends: i32::try_from(sends).unwrap_or(i32::MAX),
        })
        .await
    }

    /// Stores fills once each; the trade ids that were new.
    pub async fn insert_fills(&self, fills: Vec<FillRow>) -> Result<Vec<String>, PgError> {
        self.run(InsertFills(fills.into())).await
    }

    /// Every order not in a terminal state.
    pub async fn live_orders(&self) -> Result<Vec<LiveOrder>, PgError> {
        self.run(LiveOrders).await
    }
}

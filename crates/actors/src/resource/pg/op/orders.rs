//! The executor's orders, their state history and fills (`orders`,
//! `order_history`, `fills`).

use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::resource::pg::executor::{begin, in_one_trip};
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
    /// The intent's own `valid_until`: no request for it starts after this.
    pub deadline_ms: Option<i64>,
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

/// Records new orders in one commit, each idempotent on its label: per
/// order, `None` when new, else the state its label already has. An order
/// with `sent` is recorded as sent once (the caller sends it next): the
/// record and the send's mark are one write, `pending` and `sent` both in
/// its history.
#[derive(Clone, Debug)]
pub struct RecordOrders(pub Arc<[(NewOrder, bool)]>);

impl Operation for RecordOrders {
    type Output = Vec<Option<String>>;
    const NAME: &'static str = "record_orders";

    fn summary(&self) -> String {
        format!("{} orders", self.0.len())
    }
}

/// One statement for the whole batch: the inserts, their history rows, and
/// for each label that existed the state it had. The outer query's snapshot
/// predates the insert, so a new label finds no row there. History rows of
/// one transaction are stamped by the clock (`now()` is the transaction's
/// start), so they sort in the order they were written.
const RECORD_ORDERS: &str = "WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
             $5::float8[], $6::float8[], $7::text[], $8::bool[], $9::bool[], $10::text[],
             $11::int2[], $12::text[], $13::int8[], $14::text[], $15::bool[], $16::int8[])
             WITH ORDINALITY AS i(label, instrument_name, side, order_type, amount, price,
                 time_in_force, post_only, reduce_only, state, state_rank, reason,
                 valid_until_ms, intent_id, sent, deadline_ms, n)),
     ins AS (
         INSERT INTO orders (label, instrument_name, side, order_type, amount, price,
             time_in_force, post_only, reduce_only, state, state_rank, reason,
             valid_until_ms, intent_id, reject_code, sends, deadline_ms)
         SELECT label, instrument_name, side, order_type, amount, price, time_in_force,
             post_only, reduce_only,
             CASE WHEN sent THEN 'sent' ELSE state END,
             CASE WHEN sent THEN GREATEST(state_rank, 1::int2) ELSE state_rank END,
             reason, valid_until_ms, intent_id,
             CASE WHEN state = 'rejected' THEN 0 END, CASE WHEN sent THEN 1 ELSE 0 END,
             deadline_ms
         FROM input ORDER BY n
         ON CONFLICT (label) DO NOTHING
         RETURNING label),
     hist AS (
         INSERT INTO order_history (label, state, filled_amount, last_update_ms, reason,
             recorded_at)
         SELECT i.label, s.state, 0, 0, s.reason,
             CASE WHEN s.k = 1 THEN now() ELSE clock_timestamp() END
         FROM input i JOIN ins USING (label),
             LATERAL (VALUES (1, i.state, i.reason), (2, 'sent', NULL)) AS s(k, state, reason)
         WHERE s.k = 1 OR i.sent
         ORDER BY i.n, s.k)
     SELECT EXISTS (SELECT 1 FROM ins WHERE ins.label = i.label), o.state
     FROM input i LEFT JOIN orders o ON o.label = i.label
     ORDER BY i.n";

/// The same for one order, cheaper to plan than the batch's `unnest` (the
/// common case at low rates, where it is on every order's path).
const RECORD_ORDER: &str = "WITH ins AS (
         INSERT INTO orders (label, instrument_name, side, order_type, amount, price,
             time_in_force, post_only, reduce_only, state, state_rank, reason,
             valid_until_ms, intent_id, reject_code, sends, deadline_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
             CASE WHEN $15 THEN 'sent' ELSE $10 END,
             CASE WHEN $15 THEN GREATEST($11, 1::int2) ELSE $11 END, $12, $13, $14,
             CASE WHEN $10 = 'rejected' THEN 0 END, CASE WHEN $15 THEN 1 ELSE 0 END, $16)
         ON CONFLICT (label) DO NOTHING
         RETURNING label),
     hist AS (
         INSERT INTO order_history (label, state, filled_amount, last_update_ms, reason,
             recorded_at)
         SELECT ins.label, s.state, 0, 0, s.reason,
             CASE WHEN s.k = 1 THEN now() ELSE clock_timestamp() END
         FROM ins, (VALUES (1, $10, $12), (2, 'sent', NULL)) AS s(k, state, reason)
         WHERE s.k = 1 OR $15
         ORDER BY s.k)
     SELECT EXISTS (SELECT 1 FROM ins), (SELECT state FROM orders WHERE label = $1)";

impl PgOp for RecordOrders {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
        let orders = &*self.0;
        let client = &*client;
        if let [(o, sent)] = orders {
            let params: [(&(dyn ToSql + Sync), Type); 16] = [
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
                (sent, Type::BOOL),
                (&o.deadline_ms, Type::INT8),
            ];
            let rows = in_one_trip(
                client,
                pg.timeout_ms(),
                client.query_typed(RECORD_ORDER, &params),
            )
            .await?;
            return rows.iter().map(existing).collect();
        }
        let col = |f: fn(&NewOrder) -> String| orders.iter().map(|(o, _)| f(o)).collect::<Vec<_>>();
        let labels = col(|o| o.label.clone());
        let instruments = col(|o| o.instrument.clone());
        let sides = col(|o| o.side.clone());
        let types = col(|o| o.order_type.clone());
        let amounts: Vec<f64> = orders.iter().map(|(o, _)| o.amount).collect();
        let prices: Vec<Option<f64>> = orders.iter().map(|(o, _)| o.price).collect();
        let tifs = col(|o| o.time_in_force.clone());
        let post: Vec<bool> = orders.iter().map(|(o, _)| o.post_only).collect();
        let reduce: Vec<bool> = orders.iter().map(|(o, _)| o.reduce_only).collect();
        let states = col(|o| o.state.clone());
        let ranks: Vec<i16> = orders.iter().map(|(o, _)| o.rank).collect();
        let reasons: Vec<Option<String>> = orders.iter().map(|(o, _)| o.reason.clone()).collect();
        let valid: Vec<i64> = orders.iter().map(|(o, _)| o.valid_until_ms).collect();
        let intents = col(|o| o.intent_id.clone());
        let sent: Vec<bool> = orders.iter().map(|(_, sent)| *sent).collect();
        let deadlines: Vec<Option<i64>> = orders.iter().map(|(o, _)| o.deadline_ms).collect();
        let params: [(&(dyn ToSql + Sync), Type); 16] = [
            (&labels, Type::TEXT_ARRAY),
            (&instruments, Type::TEXT_ARRAY),
            (&sides, Type::TEXT_ARRAY),
            (&types, Type::TEXT_ARRAY),
            (&amounts, Type::FLOAT8_ARRAY),
            (&prices, Type::FLOAT8_ARRAY),
            (&tifs, Type::TEXT_ARRAY),
            (&post, Type::BOOL_ARRAY),
            (&reduce, Type::BOOL_ARRAY),
            (&states, Type::TEXT_ARRAY),
            (&ranks, Type::INT2_ARRAY),
            (&reasons, Type::TEXT_ARRAY),
            (&valid, Type::INT8_ARRAY),
            (&intents, Type::TEXT_ARRAY),
            (&sent, Type::BOOL_ARRAY),
            (&deadlines, Type::INT8_ARRAY),
        ];
        let rows = in_one_trip(
            client,
            pg.timeout_ms(),
            client.query_typed(RECORD_ORDERS, &params),
        )
        .await?;
        rows.iter().map(existing).collect()
    }
}

/// A row of `(inserted, state before)`: `None` for a new order, else the
/// state its label had.
fn existing(row: &tokio_postgres::Row) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(if row.try_get::<_, bool>(0)? {
        None
    } else {
        Some(row.try_get::<_, Option<String>>(1)?.unwrap_or_default())
    })
}

const UPDATE_ORDER: &str = "WITH up AS (
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
     INSERT INTO order_history (label, state, filled_amount, last_update_ms, reason,
         recorded_at)
     SELECT up.*, clock_timestamp() FROM up RETURNING label";

/// A state change, applied only if it moves the order forward; how many
/// orders it moved (0 or 1).
async fn update_order(client: &Client, u: &OrderUpdate) -> Result<usize, tokio_postgres::Error> {
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
    Ok(client.query_typed(UPDATE_ORDER, &params).await?.len())
}

/// Applies state changes in order, in one transaction (one commit for a
/// batch of answers); each moves its order only forward.
#[derive(Clone, Debug)]
pub struct UpdateOrders(pub Arc<[OrderUpdate]>);

impl Operation for UpdateOrders {
    type Output = ();
    const NAME: &'static str = "update_orders";

    fn summary(&self) -> String {
        format!("{} updates", self.0.len())
    }
}

impl PgOp for UpdateOrders {
    async fn attempt(
        &self,
        client: &mut Client,
        pg: &PgShared,
    ) -> Result<(), tokio_postgres::Error> {
        if let [one] = &*self.0 {
            let client = &*client;
            in_one_trip(client, pg.timeout_ms(), update_order(client, one)).await?;
            return Ok(());
        }
        // One statement per round: the first update of each label, then the
        // second, ...; a row changes once per statement, and each label's
        // updates apply in the order given. The rounds go out together.
        let mut rounds: Vec<Vec<&OrderUpdate>> = Vec::new();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for u in self.0.iter() {
            let round = seen.entry(u.label.as_str()).or_insert(0);
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(u);
            *round += 1;
        }
        if rounds.len() <= PIPELINED {
            let client = &*client;
            in_one_trip(client, pg.timeout_ms(), update_rounds(client, &rounds)).await?;
            return Ok(());
        }
        // More rounds than go out together: chunks of them, one transaction.
        let tx = begin(client, pg.timeout_ms()).await?;
        for chunk in rounds.chunks(PIPELINED) {
            update_rounds(tx.client(), chunk).await?;
        }
        tx.commit().await
    }
}

/// Statements sent together at most (`try_join_all` polls up to 30 futures
/// in order at its first poll; beyond that it makes no such promise).
const PIPELINED: usize = 30;

/// The same as `UPDATE_ORDER` for many labels (each once) in one statement.
const UPDATE_ORDERS: &str = "WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[],
             $5::float8[], $6::float8[], $7::int8[], $8::int8[], $9::text[])
             AS u(label, state, rank, order_id, filled_amount, average_price,
                 last_update_ms, reject_code, reason)),
     up AS (
         UPDATE orders o SET state = u.state, state_rank = u.rank,
             order_id = COALESCE(u.order_id, o.order_id),
             filled_amount = GREATEST(o.filled_amount, u.filled_amount),
             average_price = COALESCE(u.average_price, o.average_price),
             last_update_ms = GREATEST(o.last_update_ms, u.last_update_ms),
             reject_code = COALESCE(u.reject_code, o.reject_code),
             reason = COALESCE(u.reason, o.reason),
             updated_at = now()
         FROM input u
         WHERE o.label = u.label AND (o.state_rank < u.rank
             OR (o.state_rank = u.rank AND u.rank < 5
                 AND (o.last_update_ms < u.last_update_ms
                     OR o.filled_amount < u.filled_amount)))
         RETURNING o.label, o.state, o.filled_amount, o.last_update_ms, o.reason)
     INSERT INTO order_history (label, state, filled_amount, last_update_ms, reason,
         recorded_at)
     SELECT up.*, clock_timestamp() FROM up";

/// One statement per round, all sent at the first poll, in order.
async fn update_rounds(
    client: &Client,
    rounds: &[Vec<&OrderUpdate>],
) -> Result<(), tokio_postgres::Error> {
    futures::future::try_join_all(rounds.iter().map(|round| update_round(client, round))).await?;
    Ok(())
}

/// The updates of one round (distinct labels), in one statement.
async fn update_round(
    client: &Client,
    round: &[&OrderUpdate],
) -> Result<u64, tokio_postgres::Error> {
    let labels: Vec<&str> = round.iter().map(|u| u.label.as_str()).collect();
    let states: Vec<&str> = round.iter().map(|u| u.state.as_str()).collect();
    let ranks: Vec<i16> = round.iter().map(|u| u.rank).collect();
    let ids: Vec<Option<&str>> = round.iter().map(|u| u.order_id.as_deref()).collect();
    let filled: Vec<f64> = round.iter().map(|u| u.filled_amount).collect();
    let average: Vec<Option<f64>> = round.iter().map(|u| u.average_price).collect();
    let updated: Vec<i64> = round.iter().map(|u| u.last_update_ms).collect();
    let codes: Vec<Option<i64>> = round.iter().map(|u| u.reject_code).collect();
    let reasons: Vec<Option<&str>> = round.iter().map(|u| u.reason.as_deref()).collect();
    client
        .execute_typed(
            UPDATE_ORDERS,
            &[
                (&labels, Type::TEXT_ARRAY),
                (&states, Type::TEXT_ARRAY),
                (&ranks, Type::INT2_ARRAY),
                (&ids, Type::TEXT_ARRAY),
                (&filled, Type::FLOAT8_ARRAY),
                (&average, Type::FLOAT8_ARRAY),
                (&updated, Type::INT8_ARRAY),
                (&codes, Type::INT8_ARRAY),
                (&reasons, Type::TEXT_ARRAY),
            ],
        )
        .await
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
        // The first send moves `pending` to `sent`, and that is history too.
        let client = &*client;
        let params: [(&(dyn ToSql + Sync), Type); 3] = [
            (&self.label, Type::TEXT),
            (&self.valid_until_ms, Type::INT8),
            (&self.sends, Type::INT4),
        ];
        let statement = client.execute_typed(
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
            &params,
        );
        in_one_trip(client, pg.timeout_ms(), statement).await?;
        Ok(())
    }
}

/// Stores fills once each; answers the trade ids that were new, and those
/// stored already for another order.
#[derive(Clone, Debug)]
pub struct InsertFills(pub Arc<[FillRow]>);

/// What storing fills found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredFills {
    /// Trade ids stored now.
    pub new: Vec<String>,
    /// `(trade id, order id stored)` of fills whose trade id was stored
    /// already for another order: not stored.
    pub conflicting: Vec<(String, String)>,
}

impl Operation for InsertFills {
    type Output = StoredFills;
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
    ) -> Result<StoredFills, tokio_postgres::Error> {
        let tx = begin(client, pg.timeout_ms()).await?;
        let mut new = Vec::new();
        let mut known = Vec::new();
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
            if rows.is_empty() {
                known.push(f);
            } else {
                new.push(f.trade_id.clone());
            }
        }
        let mut conflicting = Vec::new();
        for f in known {
            let stored = tx
                .query_typed(
                    "SELECT order_id FROM fills WHERE trade_id = $1",
                    &[(&f.trade_id, Type::TEXT)],
                )
                .await?;
            if let Some(row) = stored.first() {
                let order_id: String = row.try_get(0)?;
                if order_id != f.order_id {
                    conflicting.push((f.trade_id.clone(), order_id));
                }
            }
        }
        tx.commit().await?;
        Ok(StoredFills { new, conflicting })
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
                     COALESCE(intent_id, ''), order_id, filled_amount, last_update_ms, sends,
                     deadline_ms
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
                        deadline_ms: r.try_get(18)?,
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

    /// Records new orders (those with `true`, as sent once too) in one
    /// commit; per order, `None` when new, else its label's state.
    pub async fn record_orders(
        &self,
        orders: Vec<(NewOrder, bool)>,
    ) -> Result<Vec<Option<String>>, PgError> {
        self.run(RecordOrders(orders.into())).await
    }

    /// Applies state changes in order, in one commit.
    pub async fn update_orders(&self, updates: Vec<OrderUpdate>) -> Result<(), PgError> {
        self.run(UpdateOrders(updates.into())).await
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

    /// Stores fills once each; the trade ids that were new, and those stored
    /// already for another order.
    pub async fn insert_fills(&self, fills: Vec<FillRow>) -> Result<StoredFills, PgError> {
        self.run(InsertFills(fills.into())).await
    }

    /// Every order not in a terminal state.
    pub async fn live_orders(&self) -> Result<Vec<LiveOrder>, PgError> {
        self.run(LiveOrders).await
    }
}

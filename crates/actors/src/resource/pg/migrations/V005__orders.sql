-- The executor's orders, one row per client order id (the Deribit label),
-- written before anything is sent; their state history; and every fill, once.
-- A state changes only forward (rank) and only from the exchange's word: a
-- notification older than the last one applied (last_update_ms) changes nothing.
CREATE TABLE orders (
    label           text PRIMARY KEY,
    instrument_name text NOT NULL,
    side            text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type      text NOT NULL,
    amount          double precision NOT NULL CHECK (amount > 0),
    price           double precision,
    time_in_force   text NOT NULL,
    post_only       boolean NOT NULL,
    reduce_only     boolean NOT NULL,
    -- pending, sent, unknown, open, partially_filled, filled, cancelled, rejected, expired
    state           text NOT NULL,
    state_rank      smallint NOT NULL,
    order_id        text,
    filled_amount   double precision NOT NULL DEFAULT 0,
    average_price   double precision,
    -- The exchange's last_update_timestamp of the state applied.
    last_update_ms  bigint NOT NULL DEFAULT 0,
    -- A rejection: the exchange's error code (or 0 for Keel's own limits) and why.
    reject_code     bigint,
    reason          text,
    -- The request may not start on the exchange after this (valid_until, ms).
    valid_until_ms  bigint NOT NULL,
    -- Sends of this label (a resend follows only a lookup that found nothing).
    sends           integer NOT NULL DEFAULT 0,
    intent_id       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Not unique: the label is the key; an exchange (a simulator restarted) may
-- hand out an id again, which must not stop the executor.
CREATE INDEX orders_order_id ON orders (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX orders_live ON orders (state_rank) WHERE state_rank < 5;

CREATE TABLE order_history (
    label          text NOT NULL REFERENCES orders (label),
    state          text NOT NULL,
    filled_amount  double precision NOT NULL,
    last_update_ms bigint NOT NULL,
    reason         text,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_history_label ON order_history (label, recorded_at);

CREATE TABLE fills (
    trade_id        text PRIMARY KEY,
    label           text,
    order_id        text NOT NULL,
    instrument_name text NOT NULL,
    side            text NOT NULL,
    amount          double precision NOT NULL,
    price           double precision NOT NULL,
    fee             double precision NOT NULL,
    fee_currency    text NOT NULL,
    liquidity       text NOT NULL,
    trade_seq       bigint NOT NULL,
    exchange_ms     bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fills_label ON fills (label);

-- Instruments, trades and candles: what the market-data services store.

CREATE TABLE instruments (
    instrument_name      text PRIMARY KEY,
    kind                 text NOT NULL,
    base_currency        text NOT NULL,
    quote_currency       text NOT NULL,
    tick_size            double precision NOT NULL,
    contract_size        double precision NOT NULL,
    min_trade_amount     double precision NOT NULL,
    creation_timestamp   timestamptz NOT NULL,
    expiration_timestamp timestamptz NOT NULL,
    is_active            boolean NOT NULL,
    option_type          text,
    strike               double precision,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- One row per trade; (instrument_name, trade_seq) makes every insert idempotent.
CREATE TABLE trades (
    instrument_name text NOT NULL,
    trade_seq       bigint NOT NULL,
    trade_id        text NOT NULL,
    ts              timestamptz NOT NULL,
    price           double precision NOT NULL,
    amount          double precision NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('buy', 'sell')),
    tick_direction  smallint NOT NULL,
    mark_price      double precision NOT NULL,
    index_price     double precision NOT NULL,
    iv              double precision,
    liquidation     text,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_name, trade_seq)
);
CREATE INDEX trades_ts ON trades (ts);

CREATE TABLE candles (
    instrument_name    text NOT NULL,
    resolution_minutes integer NOT NULL CHECK (resolution_minutes > 0),
    bucket             timestamptz NOT NULL,
    open               double precision NOT NULL,
    high               double precision NOT NULL,
    low                double precision NOT NULL,
    close              double precision NOT NULL,
    volume             double precision NOT NULL,
    trades             bigint NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_name, resolution_minutes, bucket)
);
CREATE INDEX candles_bucket ON candles (bucket);

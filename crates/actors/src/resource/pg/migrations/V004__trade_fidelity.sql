-- Real Deribit trades from 2019-2020 carry no mark price, and combo legs and
-- block trades carry ids worth keeping: the stored row keeps what the exchange sent.
ALTER TABLE trades
    ALTER COLUMN mark_price DROP NOT NULL,
    ADD COLUMN block_trade_id text,
    ADD COLUMN combo_id text,
    ADD COLUMN combo_trade_id text;

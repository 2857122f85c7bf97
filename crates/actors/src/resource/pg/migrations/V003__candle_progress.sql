-- The analyzer updates candles incrementally from the trade streams; each candle
-- remembers the last trade_seq it includes, so a redelivered trade is never
-- counted twice. Gap repair recomputes whole buckets from `trades`.
ALTER TABLE candles ADD COLUMN last_trade_seq bigint NOT NULL DEFAULT 0;
CREATE INDEX trades_instrument_ts ON trades (instrument_name, ts);

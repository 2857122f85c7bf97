-- Ranges of trade_seq the receiver knows it did not deliver (a reconnect, a
-- stall, entries dropped while Redis was unreachable). Gap repair fills them
-- from the exchange's history and deletes them.
CREATE TABLE trade_gaps (
    instrument_name text NOT NULL,
    from_seq        bigint NOT NULL,
    to_seq          bigint NOT NULL CHECK (to_seq >= from_seq),
    detected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_name, from_seq, to_seq)
);

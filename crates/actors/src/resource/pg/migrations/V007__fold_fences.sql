-- Cluster mode: the fencing token of the analyzer that last took each
-- instrument over. A fold carries its analyzer's token and is refused, in its
-- own transaction, once a later one is stored here: an analyzer that was
-- paused or cut off past its lease folds nothing when it resumes.
CREATE TABLE fold_fences (
    instrument_name text PRIMARY KEY,
    token           bigint NOT NULL,
    raised_at       timestamptz NOT NULL DEFAULT now()
);

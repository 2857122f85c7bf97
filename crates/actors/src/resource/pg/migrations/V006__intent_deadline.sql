-- A strategy's own bound on an order (the intent's `valid_until`, ms since the
-- epoch): no request for it starts after this, and it is not sent again after it.
ALTER TABLE orders ADD COLUMN deadline_ms bigint;

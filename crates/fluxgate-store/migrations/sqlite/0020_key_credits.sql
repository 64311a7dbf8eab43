-- Usage credits: a key may carry a number of calls it can still make (NULL: no credits, no
-- limit of this kind), refilled to an amount daily or monthly. The count belongs to the refill
-- period that started at credits_refilled_at; a count from an earlier period reads as a full
-- refill, so no timer per key is needed. Verify spends with one conditional UPDATE.
-- Keep migrations/{sqlite,postgres} in step.

ALTER TABLE api_keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill_amount BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill_interval TEXT;
ALTER TABLE api_keys ADD COLUMN credits_refill_day BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refilled_at BIGINT;

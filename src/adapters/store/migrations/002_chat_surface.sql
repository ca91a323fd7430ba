-- Sluice store schema, version 2: the whole chat surface and the model catalogue.

-- Every choice of a finished request (content, tool calls, logprobs), who served it and whether
-- its usage was reported by the backend or counted locally. null for requests that ended before.
ALTER TABLE requests ADD COLUMN output jsonb;

-- The deployment that served the request, and its cost in USD from the catalogue's prices
-- (null when the model has no price).
ALTER TABLE usage_ledger ADD COLUMN deployment text;
ALTER TABLE usage_ledger ADD COLUMN cost_usd double precision;

-- A key's own model allow-list (null: the tier's list applies).
ALTER TABLE api_keys ADD COLUMN models jsonb;

-- Sluice store schema, version 4: a key's own content-inspection mode.

-- 'disabled', 'inline', 'async' or 'hybrid'; null: the key's tier (or INSPECTION_MODE) decides.
ALTER TABLE api_keys ADD COLUMN inspection_mode text;

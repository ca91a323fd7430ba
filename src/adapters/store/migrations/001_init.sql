-- Sluice store schema, version 1. One SQL for PostgreSQL and PGlite.

CREATE TABLE users (
  user_id     text PRIMARY KEY,
  name        text,
  email       text,
  tier        text NOT NULL,
  active      boolean NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  key_id      text PRIMARY KEY,
  user_id     text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
  key_hash    text NOT NULL UNIQUE,
  prefix      text NOT NULL,
  name        text,
  admin       boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);

-- A null limit inherits the user's tier.
CREATE TABLE quotas (
  user_id             text PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
  requests_per_day    bigint,
  tokens_per_day      bigint,
  requests_per_month  bigint,
  tokens_per_month    bigint,
  max_tokens          integer,
  concurrent_streams  integer,
  priority            integer
);

-- user_id is deliberately not a foreign key: the master key and keys from the configuration
-- act as users ('master', ...) that need not exist in the users table.
CREATE TABLE requests (
  request_id        text PRIMARY KEY,
  user_id           text NOT NULL,
  key_id            text,
  model             text NOT NULL,
  mode              text NOT NULL,
  payload           jsonb NOT NULL,
  priority          integer NOT NULL DEFAULT 0,
  idempotency_key   text,
  body_hash         text NOT NULL,
  estimated_tokens  integer NOT NULL,
  prompt_tokens     integer NOT NULL,
  status            text NOT NULL DEFAULT 'queued',
  attempt           integer NOT NULL DEFAULT 0,
  claimed_by        text,
  claim_expires_at  timestamptz,
  cancel_requested  boolean NOT NULL DEFAULT false,
  result            text,
  finish_reason     text,
  completion_tokens integer,
  error             jsonb,
  created_at        timestamptz NOT NULL DEFAULT now(),
  started_at        timestamptz,
  completed_at      timestamptz,
  CONSTRAINT requests_status_check CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled'))
);
-- Null keys never collide: a unique index treats NULLs as distinct, and the predicate keeps it small.
CREATE UNIQUE INDEX requests_idempotency_idx ON requests (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX requests_unfinished_idx ON requests (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX requests_user_created_idx ON requests (user_id, created_at);

-- One row per request ever: the primary key is the exactly-once settlement guarantee.
CREATE TABLE usage_ledger (
  request_id         text PRIMARY KEY,
  user_id            text NOT NULL,
  key_id             text,
  model              text NOT NULL,
  status             text NOT NULL,
  prompt_tokens      integer NOT NULL,
  completion_tokens  integer NOT NULL,
  charged_tokens     bigint NOT NULL,
  charged_requests   integer NOT NULL,
  created_at         timestamptz NOT NULL,
  settled_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_user_settled_idx ON usage_ledger (user_id, settled_at);
CREATE INDEX usage_ledger_settled_idx ON usage_ledger (settled_at);

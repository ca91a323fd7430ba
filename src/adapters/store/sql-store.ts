// The Store over SQL: one implementation and one schema for every engine (PostgreSQL, PGlite).
// Engines are reached through `SqlClient`, the structural subset this store needs, so a driver
// stays swappable and easy to fake. Every state change that must happen once (claim, finish,
// idempotent insert) is a single conditional statement, so it is atomic on any engine.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SluiceError, isSluiceError } from '../../core/errors.ts';
import { Batcher } from './batch.ts';
import type { ErrorCode } from '../../core/errors.ts';
import type { FinishReason } from '../../ports/model.ts';
import { isEnded } from '../../ports/store.ts';
import type {
  ApiKeyRecord, ClaimRenewal, ClaimResult, DeliveryMode, InsertClaim, ModelSpend, NewRequest, Outcome, QuotaOverride, RequestError,
  DailyUsage, ListRequestsQuery, RequestOutput, RequestPayload, RequestRecord, RequestStatus, Store, TerminalStatus, UsageRow, UsageTotals, UserRecord,
} from '../../ports/store.ts';

export type Row = Record<string, unknown>;

/** What a statement runs on: a pool, a single connection, or an open transaction. */
export interface SqlExecutor {
  /** Runs one parameterised statement ($1, $2, ...) and returns its rows. */
  query(sql: string, params?: readonly unknown[]): Promise<Row[]>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
}

/** A database handle a driver produces. */
export interface SqlClient extends SqlExecutor {
  /** Batches of one hot statement that may run at once (batch.ts): 1 for a single-connection
   *  engine, a few for a pool, so one slow batch does not hold every caller. */
  readonly parallelism: number;
  /** Runs fn on one connection inside BEGIN/COMMIT; rolls back and rethrows if fn throws. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** Releases every connection. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Migrations

interface Migration { version: string; sql: string }

let migrationFiles: Migration[] | undefined;

/** The numbered .sql files beside this module, read once per process. */
function loadMigrations(): Migration[] {
  if (migrationFiles) return migrationFiles;
  const dir = fileURLToPath(new URL('./migrations/', import.meta.url));
  migrationFiles = readdirSync(dir)
    .filter((f) => /^\d+_[\w-]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: f.replace(/\.sql$/, ''), sql: readFileSync(`${dir}${f}`, 'utf8') }));
  return migrationFiles;
}

/**
 * Applies pending migrations in one transaction. The advisory lock is taken before anything else
 * so two processes starting at once against one PostgreSQL serialize here instead of racing on
 * CREATE TABLE; the second one then sees the first one's versions and applies nothing.
 */
export async function runMigrations(db: SqlClient): Promise<string[]> {
  const migrations = loadMigrations();
  return db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext('sluice.schema_migrations'))`);
    await tx.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set((await tx.query('SELECT version FROM schema_migrations')).map((r) => String(r.version)));
    const applied: string[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await tx.exec(m.sql);
      await tx.query('INSERT INTO schema_migrations (version) VALUES ($1)', [m.version]);
      applied.push(m.version);
    }
    return applied;
  });
}

/** The migrations schema_migrations does not list (all of them on an empty database); read only. */
export async function pendingMigrations(db: SqlExecutor): Promise<string[]> {
  const [table] = await db.query(`SELECT to_regclass('schema_migrations') IS NOT NULL AS present`);
  const done = table?.present === true
    ? new Set((await db.query('SELECT version FROM schema_migrations')).map((r) => String(r.version)))
    : new Set<string>();
  return loadMigrations().map((m) => m.version).filter((v) => !done.has(v));
}

// ---------------------------------------------------------------------------------------------
// Native failures -> error catalogue, in one place

/** SQLSTATE classes and socket errors that mean the database cannot be reached right now. */
function isUnavailable(code: string): boolean {
  return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03'
    || code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'ETIMEDOUT' || code === 'ENOTFOUND'
    // Out of file descriptors: no new connection can open now; it can once sockets close.
    || code === 'EMFILE' || code === 'ENFILE';
}

function toSluiceError(e: unknown): SluiceError {
  if (isSluiceError(e)) return e;
  const native = (typeof e === 'object' && e !== null ? e : {}) as { code?: unknown; constraint?: unknown };
  const code = typeof native.code === 'string' ? native.code : '';
  const constraint = typeof native.constraint === 'string' ? native.constraint : '';
  let mapped: ErrorCode = 'SLUICE_ERR_INTERNAL';
  if (code === '23505' && constraint === 'users_pkey') mapped = 'SLUICE_ERR_USER_EXISTS';
  else if (code === '23503') mapped = 'SLUICE_ERR_UNKNOWN_USER';
  else if (isUnavailable(code)) mapped = 'SLUICE_ERR_UNAVAILABLE';
  return new SluiceError(mapped, undefined, undefined, { cause: e });
}

// ---------------------------------------------------------------------------------------------
// Row mapping (drivers differ on bigint and timestamp parsing; normalise here)

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : num(v));
const str = (v: unknown): string => String(v);
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const date = (v: unknown): Date => (v instanceof Date ? v : new Date(String(v)));
const dateOrNull = (v: unknown): Date | null => (v === null || v === undefined ? null : date(v));
/** jsonb arrives parsed from both drivers; a string means a driver that did not parse it. */
const json = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) as T : v as T);

function toUser(r: Row, prefix = ''): UserRecord {
  return {
    id: str(r[`${prefix}user_id`]), name: strOrNull(r[`${prefix}name`]), email: strOrNull(r[`${prefix}email`]),
    tier: str(r[`${prefix}tier`]), active: r[`${prefix}active`] === true, createdAt: date(r[`${prefix}created_at`]),
  };
}

function toApiKey(r: Row): ApiKeyRecord {
  return {
    id: str(r.key_id), userId: str(r.user_id), prefix: str(r.prefix), name: strOrNull(r.name),
    admin: r.admin === true, models: r.models === null || r.models === undefined ? null : json<string[]>(r.models),
    inspectionMode: inspectionModeOf(r.inspection_mode),
    createdAt: date(r.created_at), revokedAt: dateOrNull(r.revoked_at),
  };
}

const INSPECTION_MODES: readonly string[] = ['disabled', 'inline', 'async', 'hybrid'];
function inspectionModeOf(v: unknown): ApiKeyRecord['inspectionMode'] {
  return typeof v === 'string' && INSPECTION_MODES.includes(v) ? v as ApiKeyRecord['inspectionMode'] : null;
}

function toQuota(r: Row): QuotaOverride {
  return {
    userId: str(r.user_id),
    requestsPerDay: numOrNull(r.requests_per_day), tokensPerDay: numOrNull(r.tokens_per_day),
    requestsPerMonth: numOrNull(r.requests_per_month), tokensPerMonth: numOrNull(r.tokens_per_month),
    maxTokens: numOrNull(r.max_tokens), concurrentStreams: numOrNull(r.concurrent_streams), priority: numOrNull(r.priority),
  };
}

/**
 * The compact form of a stored output: choice 0's content left out when it is the request's
 * `result`, which the row holds already. The finish statement parses and writes every byte it is
 * given (a 64-token answer twice makes the row cross PostgreSQL's 2 kB TOAST threshold, so each
 * finish also tries to compress it): this form makes a finish ~19 % cheaper on PGlite
 * (bench/store-row.ts). A content that differs from `result` is kept as it is.
 *
 * The previous version (`efa0f66`) shipped the reader (`outputOf`) alone, so that no process of a
 * fleet mid-upgrade answers choice 0 without its text; this one writes the compact form (expand,
 * then contract: docs/operations.md §3). Rows written whole by earlier versions read as they are.
 */
export function storedOutput(output: RequestOutput, result: string): unknown {
  return {
    ...output,
    choices: output.choices.map((c) => {
      if (c.index !== 0 || c.content !== result) return c;
      const { content: _inResult, ...rest } = c;
      return rest;
    }),
  };
}

/** A stored output as the record holds it: choice 0 without content (the compact form, see storedOutput) gets `result`. */
export function outputOf(stored: unknown, result: string | null): RequestOutput | null {
  if (stored === null || stored === undefined) return null;
  const output = json<RequestOutput>(stored);
  const first = output.choices.find((c) => c.index === 0);
  if (first && first.content === undefined) first.content = result ?? '';
  return output;
}

function toRequest(r: Row): RequestRecord {
  return {
    id: str(r.request_id), userId: str(r.user_id), keyId: strOrNull(r.key_id), model: str(r.model),
    mode: str(r.mode) as DeliveryMode, payload: json<RequestPayload>(r.payload), priority: num(r.priority),
    idempotencyKey: strOrNull(r.idempotency_key), bodyHash: str(r.body_hash),
    estimatedTokens: num(r.estimated_tokens), promptTokens: num(r.prompt_tokens),
    status: str(r.status) as RequestStatus, attempt: num(r.attempt), result: strOrNull(r.result),
    output: outputOf(r.output, strOrNull(r.result)),
    finishReason: strOrNull(r.finish_reason) as FinishReason | null, completionTokens: numOrNull(r.completion_tokens),
    error: r.error === null || r.error === undefined ? null : json<RequestError>(r.error),
    cancelRequested: r.cancel_requested === true, claimExpiresAt: dateOrNull(r.claim_expires_at),
    publishedAt: dateOrNull(r.published_at), handoffs: num(r.handoffs ?? 0),
    createdAt: date(r.created_at), startedAt: dateOrNull(r.started_at), completedAt: dateOrNull(r.completed_at),
  };
}

function toUsageRow(r: Row): UsageRow {
  return {
    requestId: str(r.request_id), userId: str(r.user_id), keyId: strOrNull(r.key_id), model: str(r.model),
    status: str(r.status) as TerminalStatus, promptTokens: num(r.prompt_tokens), completionTokens: num(r.completion_tokens),
    chargedTokens: num(r.charged_tokens), chargedRequests: num(r.charged_requests),
    costUsd: numOrNull(r.cost_usd), deployment: strOrNull(r.deployment),
    createdAt: date(r.created_at), settledAt: date(r.settled_at),
  };
}

const UNFINISHED = `status IN ('queued', 'running')`;
/**
 * Makes a batched UPDATE find its rows by primary key. The planner takes a row source of
 * jsonb_to_recordset for 100 rows, so joined on request_id alone it hashes that against the rows
 * of another index it believes small: for `status IN ('queued', 'running')`, the partial index of
 * unfinished requests. That index also holds the dead entries of every request ever finished
 * until a VACUUM (which PGlite never runs on its own), so a finish cost grew with the store's
 * history (0.3 ms after 2,000 requests, 1 ms after 4,000). `= ANY (ARRAY(...))` is a primary-key
 * probe per row. Callers that filter on status use NOT_ENDED, which the partial index cannot serve.
 */
const BY_KEY = (rows: string): string => `r.request_id = ANY (ARRAY(SELECT request_id FROM ${rows}))`;
/** `UNFINISHED` for `requests r`, worded so that the partial index is not chosen (see BY_KEY). */
const NOT_ENDED = `r.status NOT IN ('completed', 'failed', 'cancelled')`;
/** `status = 'running'` for `requests r`, worded like NOT_ENDED (`= 'running'` implies the partial
 *  index's predicate, and a batch of a thousand renewals then read every unfinished row). */
const RUNNING = `r.status NOT IN ('queued', 'completed', 'failed', 'cancelled')`;

interface InsertCall { r: NewRequest; claim: InsertClaim | undefined }
interface ClaimCall { id: string; workerId: string; claimMs: number }
interface FinishCall { id: string; o: Outcome }
interface PublishedCall { id: string }
interface RenewCall { id: string; workerId: string; attempt: number; claimMs: number }
/** An interval of `expr` milliseconds (a parameter like `$4`, or a column). */
const ms = (expr: string): string => `(${expr}::double precision * interval '1 millisecond')`;

/** Rows returned by a batched statement, in the order of its calls (null where a call got none). */
function inCallOrder(rows: readonly Row[], ids: readonly string[]): (Row | null)[] {
  const byId = new Map(rows.map((row) => [str(row.request_id), row]));
  return ids.map((id) => byId.get(id) ?? null);
}

// ---------------------------------------------------------------------------------------------

export class SqlStore implements Store {
  private readonly inserts: Batcher<InsertCall, Row | null>;
  private readonly claims: Batcher<ClaimCall, Row | null>;
  private readonly finishes: Batcher<FinishCall, boolean>;
  private readonly publishes: Batcher<PublishedCall, void>;
  private readonly renewals: Batcher<RenewCall, ClaimRenewal>;

  constructor(private readonly db: SqlClient) {
    const common = { inFlight: db.parallelism, retryAlone: (e: unknown) => !isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE') };
    this.inserts = new Batcher({ ...common, key: (c) => c.r.id, many: (calls) => this.insertMany(calls) });
    this.claims = new Batcher({ ...common, key: (c) => c.id, many: (calls) => this.claimMany(calls) });
    this.finishes = new Batcher({ ...common, key: (c) => c.id, many: (calls) => this.finishMany(calls) });
    this.publishes = new Batcher({ ...common, key: (c) => c.id, many: (calls) => this.markPublishedMany(calls) });
    this.renewals = new Batcher({ ...common, key: (c) => c.id, many: (calls) => this.renewMany(calls) });
  }

  private async q(sql: string, params: readonly unknown[] = []): Promise<Row[]> {
    try {
      return await this.db.query(sql, params);
    } catch (e) {
      throw toSluiceError(e);
    }
  }

  private async one(sql: string, params: readonly unknown[] = []): Promise<Row | null> {
    return (await this.q(sql, params))[0] ?? null;
  }

  async migrate(): Promise<string[]> {
    try {
      return await runMigrations(this.db);
    } catch (e) {
      throw toSluiceError(e);
    }
  }

  async pendingMigrations(): Promise<string[]> {
    try {
      return await pendingMigrations(this.db);
    } catch (e) {
      throw toSluiceError(e);
    }
  }

  // -- users ------------------------------------------------------------------------------------

  async createUser(u: { id: string; name?: string | null; email?: string | null; tier: string }): Promise<UserRecord> {
    const row = await this.one(
      'INSERT INTO users (user_id, name, email, tier) VALUES ($1, $2, $3, $4) RETURNING *',
      [u.id, u.name ?? null, u.email ?? null, u.tier],
    );
    return toUser(row as Row);
  }

  async getUser(id: string): Promise<UserRecord | null> {
    const row = await this.one('SELECT * FROM users WHERE user_id = $1', [id]);
    return row ? toUser(row) : null;
  }

  async listUsers(): Promise<UserRecord[]> {
    return (await this.q('SELECT * FROM users ORDER BY created_at, user_id')).map((r) => toUser(r));
  }

  async updateUser(id: string, patch: { tier?: string; active?: boolean; name?: string | null; email?: string | null }): Promise<UserRecord | null> {
    // Column names come from this fixed list, never from the caller.
    const columns = { tier: 'tier', active: 'active', name: 'name', email: 'email' } as const;
    const sets: string[] = [];
    const params: unknown[] = [id];
    for (const field of Object.keys(columns) as (keyof typeof columns)[]) {
      if (patch[field] === undefined) continue;
      params.push(patch[field]);
      sets.push(`${columns[field]} = $${params.length}`);
    }
    const row = sets.length === 0
      ? await this.one('SELECT * FROM users WHERE user_id = $1', params)
      : await this.one(`UPDATE users SET ${sets.join(', ')} WHERE user_id = $1 RETURNING *`, params);
    return row ? toUser(row) : null;
  }

  // -- api keys ---------------------------------------------------------------------------------

  async createApiKey(k: { id: string; userId: string; hash: string; prefix: string; name?: string | null; admin: boolean; models?: readonly string[] | null; inspectionMode?: ApiKeyRecord['inspectionMode'] }): Promise<ApiKeyRecord> {
    const row = await this.one(
      `INSERT INTO api_keys (key_id, user_id, key_hash, prefix, name, admin, models, inspection_mode)
       VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) RETURNING *`,
      [k.id, k.userId, k.hash, k.prefix, k.name ?? null, k.admin, k.models ? JSON.stringify(k.models) : null, k.inspectionMode ?? null],
    );
    return toApiKey(row as Row);
  }

  /** Revoked keys are returned too (revokedAt set), so the caller can tell 'revoked' from 'unknown'. */
  async findApiKey(hash: string): Promise<{ key: ApiKeyRecord; user: UserRecord } | null> {
    const row = await this.one(
      `SELECT k.*, u.user_id AS u_user_id, u.name AS u_name, u.email AS u_email, u.tier AS u_tier,
              u.active AS u_active, u.created_at AS u_created_at
       FROM api_keys k JOIN users u ON u.user_id = k.user_id WHERE k.key_hash = $1`,
      [hash],
    );
    return row ? { key: toApiKey(row), user: toUser(row, 'u_') } : null;
  }

  async listApiKeys(userId?: string): Promise<ApiKeyRecord[]> {
    const rows = await this.q(
      'SELECT * FROM api_keys WHERE ($1::text IS NULL OR user_id = $1) ORDER BY created_at, key_id',
      [userId ?? null],
    );
    return rows.map(toApiKey);
  }

  async revokeApiKey(id: string): Promise<ApiKeyRecord | null> {
    // COALESCE keeps the first revocation time when a key is revoked twice.
    const row = await this.one(
      'UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = $1 RETURNING *',
      [id],
    );
    return row ? toApiKey(row) : null;
  }

  // -- quota overrides --------------------------------------------------------------------------

  async getQuotaOverride(userId: string): Promise<QuotaOverride | null> {
    const row = await this.one('SELECT * FROM quotas WHERE user_id = $1', [userId]);
    return row ? toQuota(row) : null;
  }

  async setQuotaOverride(q: QuotaOverride): Promise<QuotaOverride> {
    const row = await this.one(
      `INSERT INTO quotas (user_id, requests_per_day, tokens_per_day, requests_per_month, tokens_per_month,
                           max_tokens, concurrent_streams, priority)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (user_id) DO UPDATE SET
         requests_per_day = EXCLUDED.requests_per_day, tokens_per_day = EXCLUDED.tokens_per_day,
         requests_per_month = EXCLUDED.requests_per_month, tokens_per_month = EXCLUDED.tokens_per_month,
         max_tokens = EXCLUDED.max_tokens, concurrent_streams = EXCLUDED.concurrent_streams,
         priority = EXCLUDED.priority
       RETURNING *`,
      [q.userId, q.requestsPerDay, q.tokensPerDay, q.requestsPerMonth, q.tokensPerMonth,
        q.maxTokens, q.concurrentStreams, q.priority],
    );
    return toQuota(row as Row);
  }

  async deleteQuotaOverride(userId: string): Promise<boolean> {
    return (await this.q('DELETE FROM quotas WHERE user_id = $1 RETURNING user_id', [userId])).length > 0;
  }

  // -- requests ---------------------------------------------------------------------------------

  async insertRequest(r: NewRequest, claim?: InsertClaim): Promise<{ record: RequestRecord; created: boolean }> {
    const inserted = await this.inserts.run({ r, claim });
    if (inserted) {
      return {
        created: true,
        record: {
          ...r, status: claim ? 'running' : 'queued', attempt: claim ? 1 : 0, result: null, output: null, finishReason: null, completionTokens: null,
          error: null, cancelRequested: false, claimExpiresAt: dateOrNull(inserted.claim_expires_at), publishedAt: null, handoffs: 0,
          createdAt: date(inserted.created_at), startedAt: dateOrNull(inserted.started_at), completedAt: null,
        },
      };
    }
    // The idempotency twin wins over a request-id twin: that is the row the caller meant.
    const existing = await this.one(
      `SELECT * FROM requests
       WHERE (user_id = $2 AND idempotency_key = $3) OR request_id = $1
       ORDER BY (user_id = $2 AND idempotency_key IS NOT DISTINCT FROM $3) DESC LIMIT 1`,
      [r.id, r.userId, r.idempotencyKey],
    );
    if (!existing) throw new SluiceError('SLUICE_ERR_INTERNAL', 'request insert conflicted with a row that no longer exists');
    return { record: toRequest(existing), created: false };
  }

  async getRequest(id: string): Promise<RequestRecord | null> {
    const row = await this.one('SELECT * FROM requests WHERE request_id = $1', [id]);
    return row ? toRequest(row) : null;
  }

  async claimRequest(id: string, workerId: string, claimMs: number): Promise<ClaimResult> {
    for (;;) {
      const claimed = await this.claims.run({ id, workerId, claimMs });
      if (claimed) return { state: 'claimed', record: toRequest(claimed) };
      const row = await this.one(`SELECT *, claim_expires_at > now() AS claim_live FROM requests WHERE request_id = $1`, [id]);
      if (!row) return { state: 'missing' };
      const record = toRequest(row);
      if (isEnded(record)) return { state: 'terminal', record };
      // The claim expired between the UPDATE and this read: try to take it again.
      if (row.claim_live !== true) continue;
      return { state: 'busy', record, until: date(row.claim_expires_at).getTime() };
    }
  }

  async renewClaim(id: string, workerId: string, attempt: number, claimMs: number): Promise<ClaimRenewal> {
    return this.renewals.run({ id, workerId, attempt, claimMs });
  }

  async handBack(id: string, workerId: string, attempt: number): Promise<boolean> {
    const rows = await this.q(
      `UPDATE requests SET claim_expires_at = now(), handoffs = handoffs + 1
       WHERE request_id = $1 AND status = 'running' AND claimed_by = $2 AND attempt = $3
       RETURNING request_id`,
      [id, workerId, attempt],
    );
    return rows.length > 0;
  }

  async releaseAllClaims(): Promise<number> {
    return (await this.q(`UPDATE requests SET claim_expires_at = now() WHERE status = 'running' RETURNING request_id`)).length;
  }

  async requestCancel(id: string): Promise<RequestRecord | null> {
    const row = await this.one('UPDATE requests SET cancel_requested = true WHERE request_id = $1 RETURNING *', [id]);
    return row ? toRequest(row) : null;
  }

  async finishRequest(id: string, o: Outcome): Promise<boolean> {
    return this.finishes.run({ id, o });
  }

  // -- the hot statements, batched (batch.ts) -----------------------------------------------------
  // Each takes its rows as one jsonb array, so one prepared statement serves every batch size, and
  // each row's conditions are those of the single-row statement it replaces. They run through q(),
  // so a batch fails with a catalogue error, which the batcher hands to every call it concerns.

  /** The inserted rows' server-set timestamps; null for a row that conflicted with a twin. */
  private async insertMany(calls: readonly InsertCall[]): Promise<(Row | null)[]> {
    // ON CONFLICT DO NOTHING: a concurrent twin waits for the first insert to commit, does nothing,
    // and its caller then reads the committed row, so both see the same request. Only the
    // server-set timestamps come back: the rest of the record is what was sent, and decoding a
    // whole row costs more than the insert on the embedded engine.
    const rows = await this.q(
      `INSERT INTO requests (request_id, user_id, key_id, model, mode, payload, priority, idempotency_key,
                             body_hash, estimated_tokens, prompt_tokens, status, attempt, claimed_by, started_at, claim_expires_at)
       SELECT x.request_id, x.user_id, x.key_id, x.model, x.mode, x.payload, x.priority, x.idempotency_key,
              x.body_hash, x.estimated_tokens, x.prompt_tokens,
              CASE WHEN x.claimed_by IS NULL THEN 'queued' ELSE 'running' END,
              CASE WHEN x.claimed_by IS NULL THEN 0 ELSE 1 END, x.claimed_by,
              CASE WHEN x.claimed_by IS NULL THEN NULL ELSE now() END,
              CASE WHEN x.claimed_by IS NULL THEN NULL ELSE now() + ${ms('x.claim_ms')} END
       FROM jsonb_to_recordset($1::jsonb) AS x(request_id text, user_id text, key_id text, model text, mode text,
              payload jsonb, priority int, idempotency_key text, body_hash text, estimated_tokens int,
              prompt_tokens int, claimed_by text, claim_ms double precision)
       ON CONFLICT DO NOTHING RETURNING request_id, created_at, started_at, claim_expires_at`,
      [JSON.stringify(calls.map(({ r, claim }) => ({
        request_id: r.id, user_id: r.userId, key_id: r.keyId, model: r.model, mode: r.mode, payload: r.payload,
        priority: r.priority, idempotency_key: r.idempotencyKey, body_hash: r.bodyHash, estimated_tokens: r.estimatedTokens,
        prompt_tokens: r.promptTokens, claimed_by: claim?.workerId ?? null, claim_ms: claim?.claimMs ?? 0,
      })))],
    );
    return inCallOrder(rows, calls.map((c) => c.r.id));
  }

  /** The claimed rows; null for a request that is missing, finished or held by a live claim. */
  private async claimMany(calls: readonly ClaimCall[]): Promise<(Row | null)[]> {
    // A conditional UPDATE: concurrent claimers queue on the row lock and re-check the WHERE
    // against the winner's version, so exactly one of them gets it.
    const rows = await this.q(
      `WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(request_id text, worker_id text, claim_ms double precision))
       UPDATE requests r
       SET status = 'running', attempt = r.attempt + 1, started_at = now(), claimed_by = x.worker_id,
           claim_expires_at = now() + ${ms('x.claim_ms')}
       FROM x
       WHERE r.request_id = x.request_id AND ${BY_KEY('x')}
         AND (r.status = 'queued' OR (r.status = 'running' AND (r.claim_expires_at IS NULL OR r.claim_expires_at <= now())))
       RETURNING r.*`,
      [JSON.stringify(calls.map((c) => ({ request_id: c.id, worker_id: c.workerId, claim_ms: c.claimMs })))],
    );
    return inCallOrder(rows, calls.map((c) => c.id));
  }

  /** Whether each call ended its request (and wrote its ledger row). */
  private async finishMany(calls: readonly FinishCall[]): Promise<boolean[]> {
    // One statement is one transaction: the terminal update and the ledger row commit together or
    // not at all. The WHERE admits only the first finisher (and only the current attempt); a
    // second ledger row for a request would violate the primary key and roll the statement back.
    // The request's prompt_tokens becomes the ledger's, also when it is 0 (cancelled before the
    // model saw it): what a request reports as usage is what it was charged for.
    const rows = await this.q(
      `WITH x AS (
         SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(request_id text, status text, result text, output jsonb, finish_reason text,
           completion_tokens int, prompt_tokens int, error jsonb, attempt int, charged_tokens bigint, charged_requests int,
           cost_usd double precision, deployment text)
       ), done AS (
         UPDATE requests r
         SET status = x.status, result = x.result, output = x.output, finish_reason = x.finish_reason, completion_tokens = x.completion_tokens,
             prompt_tokens = x.prompt_tokens,
             error = x.error, completed_at = now()
         FROM x
         WHERE r.request_id = x.request_id AND ${BY_KEY('x')} AND ${NOT_ENDED}
           AND (x.attempt IS NULL OR r.attempt = x.attempt)
         RETURNING r.request_id, r.user_id, r.key_id, r.model, r.created_at
       )
       INSERT INTO usage_ledger (request_id, user_id, key_id, model, status, prompt_tokens, completion_tokens,
                                 charged_tokens, charged_requests, cost_usd, deployment, created_at, settled_at)
       SELECT d.request_id, d.user_id, d.key_id, d.model, x.status, x.prompt_tokens, x.completion_tokens,
              x.charged_tokens, x.charged_requests, x.cost_usd, x.deployment, d.created_at, now()
       FROM done d JOIN x ON x.request_id = d.request_id
       RETURNING request_id`,
      [JSON.stringify(calls.map(({ id, o }) => ({
        request_id: id, status: o.status, result: o.result, output: o.output ? storedOutput(o.output, o.result ?? '') : null, finish_reason: o.finishReason,
        completion_tokens: o.usage.completionTokens, prompt_tokens: o.usage.promptTokens, error: o.error,
        attempt: o.attempt, charged_tokens: o.chargedTokens, charged_requests: o.chargedRequests,
        cost_usd: o.costUsd ?? null, deployment: o.deployment ?? o.output?.served?.deployment ?? null,
      })))],
    );
    const done = new Set(rows.map((row) => str(row.request_id)));
    return calls.map((c) => done.has(c.id));
  }

  /**
   * Each held claim extended, and its cancel flag read in the same statement: a long stream's
   * heartbeat is one row of a shared statement, not an UPDATE and a whole-row read of its own
   * (a thousand open streams renewed every 5 s were 400 statements a second).
   */
  private async renewMany(calls: readonly RenewCall[]): Promise<ClaimRenewal[]> {
    const rows = await this.q(
      `WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(request_id text, worker_id text, attempt int, claim_ms double precision))
       UPDATE requests r SET claim_expires_at = now() + ${ms('x.claim_ms')}
       FROM x
       WHERE r.request_id = x.request_id AND ${BY_KEY('x')}
         AND ${RUNNING} AND r.claimed_by = x.worker_id AND r.attempt = x.attempt
       RETURNING r.request_id, r.cancel_requested`,
      [JSON.stringify(calls.map((c) => ({ request_id: c.id, worker_id: c.workerId, attempt: c.attempt, claim_ms: c.claimMs })))],
    );
    return inCallOrder(rows, calls.map((c) => c.id)).map((row) => (row === null ? 'lost' : row.cancel_requested === true ? 'cancel' : 'held'));
  }

  /** Stamps published_at on each row (an ended row too: harmless, and no status read is needed). */
  private async markPublishedMany(calls: readonly PublishedCall[]): Promise<void[]> {
    await this.q(`UPDATE requests SET published_at = now() WHERE request_id = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))`,
      [JSON.stringify(calls.map((c) => c.id))]);
    return calls.map(() => undefined);
  }

  async listUnfinished(opts: { createdBefore?: Date; limit: number }): Promise<RequestRecord[]> {
    const rows = await this.q(
      `SELECT * FROM requests
       WHERE ${UNFINISHED} AND ($1::timestamptz IS NULL OR created_at < $1::timestamptz)
       ORDER BY created_at, request_id LIMIT $2::int`,
      [opts.createdBefore?.toISOString() ?? null, opts.limit],
    );
    return rows.map(toRequest);
  }

  /** A MIN over the partial index of unfinished requests: cheap however long the table. */
  async oldestQueuedAt(): Promise<Date | null> {
    const row = await this.one(`SELECT MIN(created_at) AS oldest FROM requests WHERE ${UNFINISHED} AND status = 'queued'`);
    const oldest = row?.oldest;
    return oldest === null || oldest === undefined ? null : new Date(oldest as string | Date);
  }

  async markPublished(id: string): Promise<void> {
    return this.publishes.run({ id });
  }

  async listUnpublished(opts: { createdBefore: Date; limit: number }): Promise<RequestRecord[]> {
    const rows = await this.q(
      `SELECT * FROM requests
       WHERE ${UNFINISHED} AND created_at < $1::timestamptz AND published_at IS NULL
         AND (status = 'queued' OR claim_expires_at IS NULL OR claim_expires_at <= now())
       ORDER BY created_at, request_id LIMIT $2::int`,
      [opts.createdBefore.toISOString(), opts.limit],
    );
    return rows.map(toRequest);
  }

  async countQueued(): Promise<number> {
    const row = await this.one(`SELECT count(*)::int AS n FROM requests WHERE ${UNFINISHED} AND status = 'queued' AND NOT cancel_requested`);
    return num(row?.n ?? 0);
  }

  /** Newest first: this is the admin's view of recent traffic. */
  async listRequests(opts: ListRequestsQuery): Promise<RequestRecord[]> {
    // The cursor is the (created_at, request_id) of the `before` row: a row comparison, so requests
    // created in the same instant are neither skipped nor repeated across pages. An unknown
    // cursor makes the subquery empty, the comparison NULL, and the page empty.
    const before = opts.before === undefined ? ''
      : 'AND (created_at, request_id) < (SELECT created_at, request_id FROM requests WHERE request_id = $5::text)';
    const rows = await this.q(
      `SELECT * FROM requests
       WHERE ($1::text IS NULL OR user_id = $1::text) AND ($2::text IS NULL OR status = $2::text)
         AND ($4::text IS NULL OR model = $4::text) ${before}
       ORDER BY created_at DESC, request_id DESC LIMIT $3::int`,
      [opts.userId ?? null, opts.status ?? null, opts.limit, opts.model ?? null, ...(opts.before === undefined ? [] : [opts.before])],
    );
    return rows.map(toRequest);
  }

  // -- usage ledger -----------------------------------------------------------------------------

  async usageTotals(userId: string, from: Date, to: Date): Promise<UsageTotals> {
    const row = await this.one(
      `SELECT COALESCE(SUM(charged_requests), 0)::bigint AS requests, COALESCE(SUM(charged_tokens), 0)::bigint AS tokens
       FROM usage_ledger WHERE user_id = $1 AND settled_at >= $2::timestamptz AND settled_at < $3::timestamptz`,
      [userId, from.toISOString(), to.toISOString()],
    );
    return { requests: num(row?.requests ?? 0), tokens: num(row?.tokens ?? 0) };
  }

  async spendByModel(userId: string, from: Date, to: Date): Promise<ModelSpend[]> {
    // SUM over no non-null cost_usd is NULL: a model without a price reports null, not 0. Tokens
    // count the charged rows only: a refunded request's row keeps its usage but cost nothing.
    const rows = await this.q(
      `SELECT model, COALESCE(SUM(charged_requests), 0)::bigint AS requests,
              COALESCE(SUM(prompt_tokens) FILTER (WHERE charged_requests > 0), 0)::bigint AS prompt_tokens,
              COALESCE(SUM(completion_tokens) FILTER (WHERE charged_requests > 0), 0)::bigint AS completion_tokens,
              COALESCE(SUM(charged_tokens), 0)::bigint AS charged_tokens, SUM(cost_usd) AS cost_usd
       FROM usage_ledger WHERE user_id = $1 AND settled_at >= $2::timestamptz AND settled_at < $3::timestamptz
       GROUP BY model ORDER BY model`,
      [userId, from.toISOString(), to.toISOString()],
    );
    return rows.map((r) => ({
      model: str(r.model), requests: num(r.requests), promptTokens: num(r.prompt_tokens), completionTokens: num(r.completion_tokens),
      chargedTokens: num(r.charged_tokens), costUsd: numOrNull(r.cost_usd),
    }));
  }

  async usageByDay(userId: string, from: Date, to: Date, timeZone: string): Promise<DailyUsage[]> {
    const rows = await this.q(
      `SELECT to_char(settled_at AT TIME ZONE $4::text, 'YYYY-MM-DD') AS day,
              COALESCE(SUM(charged_requests), 0)::bigint AS requests, COALESCE(SUM(charged_tokens), 0)::bigint AS tokens
       FROM usage_ledger WHERE user_id = $1 AND settled_at >= $2::timestamptz AND settled_at < $3::timestamptz
       GROUP BY 1 ORDER BY 1`,
      [userId, from.toISOString(), to.toISOString(), timeZone],
    );
    return rows.map((r) => ({ day: str(r.day), requests: num(r.requests), tokens: num(r.tokens) }));
  }

  async ledgerRow(requestId: string): Promise<UsageRow | null> {
    const row = await this.one('SELECT * FROM usage_ledger WHERE request_id = $1', [requestId]);
    return row ? toUsageRow(row) : null;
  }

  async ledgerRowsOf(requestIds: readonly string[]): Promise<UsageRow[]> {
    if (requestIds.length === 0) return [];
    const rows = await this.q('SELECT * FROM usage_ledger WHERE request_id = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))', [JSON.stringify(requestIds)]);
    return rows.map((r) => toUsageRow(r));
  }

  async usageRows(opts: { from: Date; to: Date; userId?: string; limit?: number; newestFirst?: boolean }): Promise<UsageRow[]> {
    // LIMIT NULL means no limit in PostgreSQL. The order is spelled out, not a parameter, so each
    // statement can walk the (user_id, settled_at) index in its own direction.
    const order = opts.newestFirst ? 'settled_at DESC, request_id DESC' : 'settled_at, request_id';
    const rows = await this.q(
      `SELECT * FROM usage_ledger
       WHERE settled_at >= $1::timestamptz AND settled_at < $2::timestamptz AND ($3::text IS NULL OR user_id = $3::text)
       ORDER BY ${order} LIMIT $4::int`,
      [opts.from.toISOString(), opts.to.toISOString(), opts.userId ?? null, opts.limit ?? null],
    );
    return rows.map(toUsageRow);
  }

  /**
   * Answers the calls already made to the batched statements (an insert a 202 waits for gets its
   * own result), for at most CLOSE_FLUSH_MS, then closes the engine; later calls fail at once.
   */
  async close(): Promise<void> {
    const closed = () => new SluiceError('SLUICE_ERR_UNAVAILABLE', 'store: closed');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([this.inserts, this.claims, this.finishes, this.publishes, this.renewals].map((b) => b.close(closed))),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, CLOSE_FLUSH_MS); }),
    ]);
    clearTimeout(timer);
    await this.db.close();
  }
}

/** How long close() waits for batched statements already asked for before closing the engine. */
const CLOSE_FLUSH_MS = 5_000;

// Store port: the durable record of users, API keys, quota overrides, requests and the usage
// ledger. One SQL schema for every engine (PostgreSQL and embedded PGlite).

import type { ChatMessage, FinishReason, ToolCall, UsageSource } from './model.ts';
import type { Usage } from './bus.ts';

export type RequestStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
export type TerminalStatus = 'completed' | 'failed' | 'cancelled';
/** Whether a request has ended: its status can no longer change. */
export function isEnded<R extends { status: RequestStatus }>(r: R): r is R & { status: TerminalStatus } {
  return r.status === 'completed' || r.status === 'failed' || r.status === 'cancelled';
}
export type DeliveryMode = 'queued' | 'direct';

export interface UserRecord {
  id: string; name: string | null; email: string | null; tier: string; active: boolean; createdAt: Date;
}
export interface ApiKeyRecord {
  id: string; userId: string; prefix: string; name: string | null; admin: boolean;
  /** The key's own model allow-list; null = its user's tier decides. It can only narrow the tier's list. */
  models: string[] | null;
  /** The key's own content-inspection mode; null = its tier's (or INSPECTION_MODE). */
  inspectionMode: 'disabled' | 'inline' | 'async' | 'hybrid' | null;
  createdAt: Date; revokedAt: Date | null;
}
/** Per-user limits; a null field inherits the tier's value. */
export interface QuotaOverride {
  userId: string;
  requestsPerDay: number | null; tokensPerDay: number | null;
  requestsPerMonth: number | null; tokensPerMonth: number | null;
  maxTokens: number | null; concurrentStreams: number | null; priority: number | null;
}

/** The body a worker needs to run the request again (validated at admission). */
export interface RequestPayload {
  messages: ChatMessage[]; maxTokens: number; temperature?: number; topP?: number; stop?: string[]; seed?: number;
  /** Choices (OpenAI `n`); absent = 1. The estimate and reservation are multiplied by it. */
  n?: number;
  /** Whether the caller streams (a non-streaming direct call may go upstream non-streaming). */
  stream?: boolean;
  /** Forwarded chat fields (ModelRequest.params). */
  params?: Record<string, unknown>;
  /**
   * Set on an embeddings request (POST /v1/embeddings): its inputs. Such a request is run by the
   * gateway that answers it (messages empty, maxTokens 0) and never by a worker.
   */
  embedding?: { input: string[] };
  /** W3C traceparent of the span that accepted the request (tracing on): the worker's spans continue its trace. */
  traceparent?: string;
  /** Content inspection of the answer, resolved at admission (key, tier, INSPECTION_MODE); absent = disabled. */
  inspection?: 'inline' | 'async' | 'hybrid';
}

/** One choice of a finished request, assembled from its event log. */
export interface ChoiceOutput {
  index: number; content: string; toolCalls: ToolCall[]; finishReason: FinishReason;
  /** OpenAI logprobs `content` entries, when the request asked for them. */
  logprobs?: unknown[];
}

/** What a request produced beyond choice 0's text (`result`): every choice, who served it, how usage was counted. */
export interface RequestOutput {
  choices: ChoiceOutput[];
  usageSource: UsageSource;
  /** The deployment and the backend's own model name that served the final attempt. */
  served?: { deployment: string; model: string };
}

export interface NewRequest {
  id: string; userId: string; keyId: string | null; model: string; mode: DeliveryMode;
  payload: RequestPayload; priority: number; idempotencyKey: string | null;
  /** Fingerprint of the body, so a reused Idempotency-Key with another body can be refused ('' without a key). */
  bodyHash: string;
  estimatedTokens: number;
  /** The admission count until the request ends; then the outcome's, as in its ledger row. */
  promptTokens: number;
}

export interface RequestError { code: string; message: string }

export interface RequestRecord extends NewRequest {
  status: RequestStatus;
  attempt: number;
  result: string | null;
  /** Every choice, tool calls and logprobs, who served it; null until the request ends (and for rows older than it). */
  output: RequestOutput | null;
  finishReason: FinishReason | null;
  completionTokens: number | null;
  error: RequestError | null;
  cancelRequested: boolean;
  /** Until when the current worker's claim holds (running requests); null when never claimed. */
  claimExpiresAt: Date | null;
  /** When the queue last confirmed a job for this request; null while none was (see markPublished). */
  publishedAt: Date | null;
  /** Attempts handed back by a draining process (handBack): they do not count toward the maximum. */
  handoffs: number;
  createdAt: Date; startedAt: Date | null; completedAt: Date | null;
}

/** How a request ended and what it is charged; written once, with its ledger row. */
export interface Outcome {
  status: TerminalStatus;
  /** The attempt that produced the outcome; a stale attempt cannot finish a request. null = any. */
  attempt: number | null;
  result: string;
  /** Absent on outcomes that carry no more than `result` (a cancel before the model ran). */
  output?: RequestOutput;
  finishReason: FinishReason;
  usage: Usage;
  error: RequestError | null;
  /** Charged to quota and billed: 0 tokens and 0 requests for a refund. */
  chargedTokens: number;
  chargedRequests: 0 | 1;
  /** What the charge costs in USD at the model's catalogue price; null (or absent) when the model has no price. */
  costUsd?: number | null;
  /** The deployment that served the request (default: output.served.deployment); null when unknown. */
  deployment?: string | null;
}

/**
 * The record as the store holds it once `o` ended it (finishRequest returned true): what reading it
 * back would return, but for `completedAt`, which is the caller's clock rather than the database's.
 */
export function endedRecord(r: RequestRecord, o: Outcome, completedAt: Date): RequestRecord {
  return {
    ...r, status: o.status, result: o.result, output: o.output ?? null, finishReason: o.finishReason,
    promptTokens: o.usage.promptTokens, completionTokens: o.usage.completionTokens, error: o.error, completedAt,
  };
}

export interface InsertClaim { workerId: string; claimMs: number }

export type ClaimResult =
  | { state: 'claimed'; record: RequestRecord }
  /** Another live worker holds the request until `until` (ms since epoch). */
  | { state: 'busy'; record: RequestRecord; until: number }
  | { state: 'terminal'; record: RequestRecord }
  | { state: 'missing' };

/**
 * What a claim renewal found: `held` (extended), `cancel` (extended, and a cancel was asked for:
 * stop with it), `lost` (this worker/attempt no longer holds the claim: stop working).
 */
export type ClaimRenewal = 'held' | 'cancel' | 'lost';

export interface UsageRow {
  requestId: string; userId: string; keyId: string | null; model: string; status: TerminalStatus;
  promptTokens: number; completionTokens: number; chargedTokens: number; chargedRequests: number;
  /** Cost in USD at the model's price when it settled; null for an unpriced model. */
  costUsd: number | null;
  /** The deployment that served it; null when unknown (cancelled before a model ran, older rows). */
  deployment: string | null;
  createdAt: Date; settledAt: Date;
}

export interface UsageTotals { requests: number; tokens: number }

/** One model's settled usage over a period; costUsd sums the priced rows (null if none was priced). */
export interface ModelSpend {
  model: string; requests: number; promptTokens: number; completionTokens: number; chargedTokens: number; costUsd: number | null;
}

export interface ListRequestsQuery { userId?: string; status?: RequestStatus; model?: string; before?: string; limit: number }

/** One calendar day of a user's settled usage: `day` is YYYY-MM-DD in the asked time zone. */
export interface DailyUsage { day: string; requests: number; tokens: number }

export interface Store {
  /** Applies pending SQL migrations (idempotent); resolves to the versions it applied. */
  migrate(): Promise<string[]>;
  /** The versions of the migrations not yet applied, in order; changes nothing. */
  pendingMigrations(): Promise<string[]>;

  createUser(u: { id: string; name?: string | null; email?: string | null; tier: string }): Promise<UserRecord>;
  getUser(id: string): Promise<UserRecord | null>;
  listUsers(): Promise<UserRecord[]>;
  updateUser(id: string, patch: { tier?: string; active?: boolean; name?: string | null; email?: string | null }): Promise<UserRecord | null>;

  /** Stores a key by its hash only; the plaintext never reaches the store. */
  createApiKey(k: { id: string; userId: string; hash: string; prefix: string; name?: string | null; admin: boolean; models?: readonly string[] | null; inspectionMode?: ApiKeyRecord['inspectionMode'] }): Promise<ApiKeyRecord>;
  findApiKey(hash: string): Promise<{ key: ApiKeyRecord; user: UserRecord } | null>;
  listApiKeys(userId?: string): Promise<ApiKeyRecord[]>;
  revokeApiKey(id: string): Promise<ApiKeyRecord | null>;

  getQuotaOverride(userId: string): Promise<QuotaOverride | null>;
  setQuotaOverride(q: QuotaOverride): Promise<QuotaOverride>;
  deleteQuotaOverride(userId: string): Promise<boolean>;

  /**
   * Inserts a queued request; with an idempotency key already used by this user, returns the
   * existing row and created=false. With `claim`, the new row starts as attempt 1, already claimed
   * by that worker (direct mode: the gateway runs it at once, saving a round trip).
   */
  insertRequest(r: NewRequest, claim?: InsertClaim): Promise<{ record: RequestRecord; created: boolean }>;
  getRequest(id: string): Promise<RequestRecord | null>;
  /**
   * Takes the request for one attempt: from `queued`, or from `running` whose claim expired
   * (its worker died). Increments `attempt`, sets `running`, holds the claim for `claimMs`.
   */
  claimRequest(id: string, workerId: string, claimMs: number): Promise<ClaimResult>;
  /**
   * Extends the claim by `claimMs` (0 gives it back at once), and says whether a cancel was asked
   * for meanwhile: one statement, batched with the other attempts' renewals.
   */
  renewClaim(id: string, workerId: string, attempt: number, claimMs: number): Promise<ClaimRenewal>;
  /**
   * Gives the claim back at once without spending the attempt (a draining process stops it): the
   * request stays running for the next claim, and `handoffs` counts it. False if not held.
   */
  handBack(id: string, workerId: string, attempt: number): Promise<boolean>;
  /** Expires every claim now (embedded start-up: the previous process is dead). */
  releaseAllClaims(): Promise<number>;
  /** Records that a cancel was asked for; null if the request does not exist. */
  requestCancel(id: string): Promise<RequestRecord | null>;
  /**
   * Ends the request and appends its ledger row in one transaction, once: true iff this call did
   * it (the request was not terminal and, if outcome.attempt is set, is still on that attempt).
   */
  finishRequest(id: string, outcome: Outcome): Promise<boolean>;
  /** Requests not yet terminal, oldest first (recovery and the sweeper). */
  listUnfinished(opts: { createdBefore?: Date; limit: number }): Promise<RequestRecord[]>;
  /** When the oldest request still `queued` (no worker started it) was created; null when none is (queue age). */
  oldestQueuedAt(): Promise<Date | null>;
  /** Records that the queue confirmed a job for the request (the broker holds it from now on). */
  markPublished(id: string): Promise<void>;
  /**
   * Unfinished requests created before `createdBefore` for which no job was ever confirmed and
   * none runs: queued ones, and running ones whose claim has expired. Oldest first. These are the
   * requests whose job is lost (the sweeper publishes them).
   */
  listUnpublished(opts: { createdBefore: Date; limit: number }): Promise<RequestRecord[]>;
  /** Requests waiting for a worker: queued and no cancel asked for (the true queue depth). */
  countQueued(): Promise<number>;
  /**
   * Requests newest first (created_at, then id, descending), optionally of one user, status and
   * model. `before` is a request id (a page's last row): only requests older than it are listed;
   * an id that does not exist lists nothing.
   */
  listRequests(opts: ListRequestsQuery): Promise<RequestRecord[]>;

  /** Sum of charged requests and tokens settled for the user with settledAt in [from, to). */
  usageTotals(userId: string, from: Date, to: Date): Promise<UsageTotals>;
  /** The ledger row of one request (what it was charged), or null while it has not ended. */
  ledgerRow(requestId: string): Promise<UsageRow | null>;
  /** The ledger rows of those requests that have one, in one statement (the sweeper's check of every open reservation). */
  ledgerRowsOf(requestIds: readonly string[]): Promise<UsageRow[]>;
  /** Settled usage per model with settledAt in [from, to) for one user, by model id. */
  spendByModel(userId: string, from: Date, to: Date): Promise<ModelSpend[]>;
  /**
   * Charged tokens and requests per calendar day (in `timeZone`, an IANA name) of one user's
   * ledger rows with settledAt in [from, to), oldest day first; days without a row are absent.
   */
  usageByDay(userId: string, from: Date, to: Date, timeZone: string): Promise<DailyUsage[]>;
  /** Ledger rows with settledAt in [from, to), oldest first (newest first if asked), optionally for one user. */
  usageRows(opts: { from: Date; to: Date; userId?: string; limit?: number; newestFirst?: boolean }): Promise<UsageRow[]>;

  close(): Promise<void>;
}

// Limiter port: atomic token and request quotas over several windows at once, idempotent
// settlement keyed by request id, per-user stream leases and a cheap rate limit for polls.
//
// Counters hold reserved + settled amounts, so an admission check sees in-flight requests and
// concurrent admissions can never overshoot a limit.

export type WindowKind = 'daily' | 'monthly';
export type Metric = 'requests' | 'tokens';

/** One counter a reservation is checked against; the caller resolves limits and periods. */
export interface WindowLimit {
  window: WindowKind;
  metric: Metric;
  limit: number;
  /** The period this window covers, e.g. '2026-11-21' or '2026-11'; part of the counter's key. */
  period: string;
  /** When the period ends (ms since epoch); counters may expire then. */
  resetAt: number;
}

export interface WindowState {
  window: WindowKind; metric: Metric; period: string; limit: number; used: number; remaining: number; resetAt: number;
}

export interface ReserveInput {
  requestId: string;
  userId: string;
  /** Estimated tokens (prompt + effective max_tokens); requests are always 1. */
  tokens: number;
  windows: WindowLimit[];
  /** After this (ms since epoch) an unsettled reservation may be reclaimed by the sweeper. */
  deadlineAt: number;
  /**
   * The most open reservations (reserved, neither settled nor released: requests queued or
   * running) the user may hold, this one included; absent = no cap. Checked in the same atomic
   * step as the windows, so it holds exactly across gateways.
   */
  maxInFlight?: number;
}

export type ReserveResult =
  /** duplicate: a reservation for this request id already existed; nothing changed. */
  | { ok: true; duplicate: boolean; windows: WindowState[] }
  /** Refused by a quota window: no counter changed; `exceeded` is the first window that did not fit. */
  | { ok: false; reason: 'window'; exceeded: WindowState; windows: WindowState[] }
  /** Refused: the user already holds `limit` open reservations; no counter changed. */
  | { ok: false; reason: 'in_flight'; inFlight: { open: number; limit: number }; windows: WindowState[] };

export interface Reservation {
  requestId: string; userId: string; tokens: number; windows: WindowLimit[]; deadlineAt: number;
}

export type SettleResult = 'settled' | 'already-settled' | 'unknown';

export type LeaseResult = { ok: true; fence: number } | { ok: false; active: number; limit: number };

export interface Limiter {
  /**
   * Reserves 1 request and `tokens` in every window, all or none, and opens one of the user's
   * `maxInFlight` slots; settle and release close it. Idempotent per request id (a duplicate
   * opens nothing).
   */
  reserve(r: ReserveInput): Promise<ReserveResult>;
  /**
   * Replaces the reservation by the actual charge in every window it was made in, once per
   * request id. A refund is settle with 0 tokens and 0 requests.
   */
  settle(requestId: string, charged: { tokens: number; requests: 0 | 1 }): Promise<SettleResult>;
  /**
   * Takes back a reservation as if it had never been made, for a request that never came to
   * exist (its row could not be stored): unlike a refund, no settled mark is left, so the same
   * id (an idempotent retry) reserves again. False if no reservation was held.
   */
  release(requestId: string): Promise<boolean>;
  /** Current counters (reserved + settled) of these windows. */
  usage(userId: string, windows: WindowLimit[]): Promise<WindowState[]>;
  /** Unsettled reservations whose deadline is before `now` (for the sweeper). */
  expired(now: number, limit: number): Promise<Reservation[]>;
  /** Extends a reservation's deadline (a long generation is still running). */
  extend(requestId: string, deadlineAt: number): Promise<boolean>;

  /** Takes one of the user's `limit` concurrent stream slots for `ttlMs`. */
  acquireLease(userId: string, leaseId: string, limit: number, ttlMs: number): Promise<LeaseResult>;
  /** Keeps a lease alive; false if it expired (and was maybe taken by another stream). */
  refreshLease(userId: string, leaseId: string, ttlMs: number): Promise<boolean>;
  releaseLease(userId: string, leaseId: string): Promise<void>;
  /** How many of the user's stream slots are held now (leases not expired): what usage reports as streams in use. */
  activeLeases(userId: string): Promise<number>;

  /** Fixed-window counter for cheap limits (status polls): ok while hits ≤ limit in windowMs. */
  hit(key: string, limit: number, windowMs: number): Promise<{ ok: boolean; retryAfterMs: number }>;

  /**
   * False for per-process limiters (memory): their state must be rebuilt from the store at
   * start-up (settled usage from the ledger, outstanding reservations from unfinished requests).
   */
  readonly durable: boolean;
  /** Adds settled usage to counters without a reservation (rebuild after restart). */
  restoreUsage(userId: string, windows: WindowLimit[], charged: { tokens: number; requests: number }): Promise<void>;
  close(): Promise<void>;
}

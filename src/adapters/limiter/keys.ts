// What the Redis and the in-process limiter share: the key layout (so a deployment can move
// between them and the seed's key names hold for both), the counters' lifetimes, and input checks.
import { SluiceError } from '../../core/errors.ts';
import type { Metric, ReserveInput, WindowKind, WindowLimit, WindowState } from '../../ports/limiter.ts';

/** Counters outlive their period a little, so a settle just after midnight still finds them. */
export const COUNTER_GRACE_MS = 3_600_000;
/**
 * How long a settled request id is remembered. What it guards: a reserve for a request id that was
 * already settled must be a duplicate, not a new charge. That happens when an idempotent replay
 * read the store before the first request's row existed, and reserves after that request ended:
 * normally milliseconds apart. (A second settle needs no memory: only held reservations change
 * counters.) Every id settled in this window is kept (memory here, a key in Redis), so it is
 * minutes, not days: three days at 100 requests/s was 26 M ids.
 */
export const SETTLED_TTL_MS = 15 * 60_000;
/** A fencing counter outlives any lease that could still compare against it. */
export const FENCE_TTL_MS = 7 * 86_400_000;

/** The key layout shared by the Redis and the in-process limiter. */
export function limiterKeys(prefix: string) {
  const user = (userId: string) => `${prefix}user:{${userId}}`;
  return {
    counter: (userId: string, w: { window: WindowKind; metric: Metric; period: string }) =>
      `${user(userId)}:quota:${w.window}:${w.metric}:used:${w.period}`,
    reservation: (userId: string, requestId: string) => `${user(userId)}:reservation:${requestId}`,
    settled: (userId: string, requestId: string) => `${user(userId)}:settled:${requestId}`,
    reservationIndex: (requestId: string) => `${prefix}sluice:reservation:${requestId}`,
    deadlines: `${prefix}sluice:reservations`,
    /** The request ids of the user's open (unsettled, unreleased) reservations. */
    open: (userId: string) => `${user(userId)}:in-flight`,
    leases: (userId: string) => `${user(userId)}:leases`,
    leaseFence: (userId: string) => `${user(userId)}:lease-fence`,
    hit: (key: string) => `${prefix}sluice:hit:${key}`,
  };
}
export type LimiterKeys = ReturnType<typeof limiterKeys>;

export function windowState(w: WindowLimit, used: number): WindowState {
  return { window: w.window, metric: w.metric, period: w.period, limit: w.limit, used, remaining: Math.max(0, w.limit - used), resetAt: w.resetAt };
}

/** Amount a reservation charges a window: one request, or the estimated tokens. */
export function amountFor(w: { metric: Metric }, tokens: number, requests = 1): number {
  return w.metric === 'tokens' ? tokens : requests;
}

function assertCount(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new SluiceError('SLUICE_ERR_INTERNAL', `${name} must be a non-negative integer, got ${v}`);
}

export function assertReserveInput(r: ReserveInput): void {
  assertCount('tokens', r.tokens);
  if (r.maxInFlight !== undefined) assertCount('maxInFlight', r.maxInFlight);
  for (const w of r.windows) assertCount(`limit of ${w.window} ${w.metric}`, w.limit);
}

export function assertCharge(charged: { tokens: number; requests: number }): void {
  assertCount('tokens', charged.tokens);
  assertCount('requests', charged.requests);
}

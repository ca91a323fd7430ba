// Retry delays, one rule for every caller: the queues' default retry delay, worker retries of
// transient model failures, and direct-mode retries in the gateway.

/** base * 2^(attempt-1), capped at maxMs: the delay before attempt `attempt + 1`. */
export function exponentialBackoff(attempt: number, baseMs: number, maxMs = 60_000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, attempt - 1), 30));
}

/** The same with "equal jitter" (half fixed, half random), so retries of many requests spread out. */
export function jitteredBackoff(attempt: number, baseMs: number, maxMs = 60_000): number {
  const d = exponentialBackoff(attempt, baseMs, maxMs);
  return Math.round(d / 2 + Math.random() * (d / 2));
}

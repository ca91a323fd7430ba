// What every queue adapter shares: priorities, the catalogue error for broker failures, and how
// a handler that throws is treated.
import { SluiceError } from '../../core/errors.ts';
import type { Delivery, Job } from '../../ports/queue.ts';

/** The highest priority: priorities are integers 0..MAX_PRIORITY. */
export const MAX_PRIORITY = 9;

/** Anything outside 0..MAX_PRIORITY is clamped rather than refused. */
export function clampPriority(p: number): number {
  return Number.isFinite(p) ? Math.min(MAX_PRIORITY, Math.max(0, Math.round(p))) : 0;
}

/** The one place broker and driver failures become catalogue errors. */
export function unavailable(message: string, cause?: unknown): SluiceError {
  return new SluiceError('SLUICE_ERR_UNAVAILABLE', `queue: ${message}`, undefined, cause === undefined ? undefined : { cause });
}

export const noop = (): void => undefined;

/** Runs a handler; one that throws without settling its delivery gets the queue's backoff, as a broker would redeliver. */
export async function runHandler<D extends Delivery & { readonly settled: boolean }>(handler: (d: D) => Promise<void>, delivery: D): Promise<void> {
  try {
    await handler(delivery);
  } catch {
    if (!delivery.settled) await delivery.retry().catch(noop);
  }
}

/** The job as it travels in a broker message: userId and model only when known, so old and new jobs read alike. */
export function jobBody(job: Job, priority: number): string {
  return JSON.stringify({
    requestId: job.requestId, priority, ...(job.userId !== undefined && { userId: job.userId }), ...(job.model !== undefined && { model: job.model }),
  });
}

/** The optional fields of a parsed message body that are non-empty strings (userId, model), or nothing. */
export function optionalJobFields(v: Record<string, unknown>): { userId?: string; model?: string } {
  return {
    ...(typeof v.userId === 'string' && v.userId !== '' && { userId: v.userId }),
    ...(typeof v.model === 'string' && v.model !== '' && { model: v.model }),
  };
}

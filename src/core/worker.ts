// The worker role: consumes jobs, claims each request in the store (the claim, not the queue,
// decides who runs it, so duplicate jobs are harmless), runs one attempt, then acks, retries
// with backoff, or dead-letters after the last attempt (the request is failed and refunded).
//
// Fair sharing: a broker queue is FIFO within a priority, so a user who queued many jobs would
// take every slot as they free. Before claiming, the worker defers (retry after fairDeferMs, no
// claim, so no attempt is spent) a job whose user already holds its share of this worker's slots
// while other jobs wait; the share is concurrency / users whose jobs reached this worker lately.
// The deferred job goes to the back of its priority, so other users' jobs behind it get the slot.
// A user alone keeps every slot (share = concurrency), and nothing is deferred with an empty queue.
//
// Capacity: the limit on concurrent model calls is each deployment's maxConcurrency (the router's
// count, per process), not the worker's. The worker holds as many jobs as the catalogue's capacity
// (the sum of every deployment's maxConcurrency; worker.concurrency caps it when set): that is its
// queue prefetch, bounded, so one worker never pulls a whole backlog. A job whose model has every
// deployment at its maxConcurrency (router availability 'busy') is deferred before any claim
// (retry after busyDeferMs, doubling per redelivery up to 16x; no attempt spent) instead of
// holding a slot while it waits: jobs of other models behind it still run. A job may still wait
// briefly in the router when another call took the last free slot between the check and the call.
//
// Draining (SIGTERM): pause() takes no new job while the running ones go on; idle() waits for
// them; handOff() stops those still running, each giving its claim back and leaving its delivery
// unsettled, so stop() returns the jobs to the queue and another worker continues them at once.
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Config } from '../config.ts';
import type { ModelBackend } from '../ports/model.ts';
import type { Consumer, Delivery, Queue } from '../ports/queue.ts';
import type { RequestRecord, Store } from '../ports/store.ts';
import type { AttemptRunner } from './attempt-runner.ts';
import type { Ledger } from './ledger.ts';
import { jitteredBackoff } from './backoff.ts';
import { settledWithin } from './drain.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';

export class Worker {
  readonly id = `worker-${process.pid}-${randomUUID().slice(0, 8)}`;
  private consumer: Consumer | null = null;
  /** userId -> this worker's slots that user's jobs hold now. */
  private readonly holding = new Map<string, number>();
  /** userId -> when one of its jobs last reached this worker (the users sharing the slots). */
  private readonly lastSeen = new Map<string, number>();
  /** Deliveries being handled now. */
  private readonly running = new Set<Promise<void>>();
  private readonly handoff = new AbortController();

  /** Jobs held at once (the queue's prefetch); see the header. */
  readonly slots: number;

  constructor(private readonly deps: {
    config: Config; store: Store; queue: Queue; runner: AttemptRunner; ledger: Ledger; logger: Logger; metrics?: Metrics; now: () => number;
    /** The model router: its capacity sizes the slots, its availability defers jobs of a full model. */
    model?: Pick<ModelBackend, 'availability' | 'capacity'>;
  }) {
    this.slots = workerSlots(deps.config.worker.concurrency, deps.model?.capacity?.());
    setMaxListeners(0, this.handoff.signal); // every running attempt waits on it
  }

  async start(): Promise<void> {
    this.consumer = await this.deps.queue.consume((d) => this.track(this.handle(d)), { concurrency: this.slots });
    this.deps.logger.info({ worker: this.id, concurrency: this.slots }, 'worker consuming');
  }

  async stop(): Promise<void> { await this.consumer?.close(); this.consumer = null; }

  /** Takes no new job; the running ones go on. */
  async pause(): Promise<void> { await this.consumer?.pause(); }

  /** Resolves true once no job is being handled here, false after `ms`. */
  idle(ms: number): Promise<boolean> { return settledWithin(this.running, ms); }

  /** Running attempts stop and give their claims back; their jobs return to the queue on stop(). */
  handOff(): void { this.handoff.abort(); }

  /** Jobs being handled now. */
  get active(): number { return this.running.size; }

  private track(work: Promise<void>): Promise<void> {
    this.running.add(work);
    return work.finally(() => this.running.delete(work));
  }

  async handle(d: Delivery): Promise<void> {
    const model = d.job.model;
    // Busy: every deployment of the model is at capacity. Unavailable (circuits open) runs, so the
    // attempt fails over or retries with the usual backoff and accounting.
    const a = model === undefined ? undefined : this.deps.model?.availability?.(model);
    if (a !== undefined && !a.ok && a.reason === 'busy') {
      this.deps.metrics?.busyDeferrals.inc();
      return d.retry(this.deps.config.worker.busyDeferMs * 2 ** Math.min(d.deliveryCount - 1, 4)).catch(() => {});
    }
    const userId = d.job.userId;
    if (userId === undefined) return this.run(d);
    this.seen(userId);
    // Deferred again and again while the user stays over its share, each time later: on a FIFO
    // broker the next job is often the same user's, and it must not spin through the backlog.
    if (await this.overShare(userId)) return d.retry(this.deps.config.worker.fairDeferMs * 2 ** Math.min(d.deliveryCount - 1, 5)).catch(() => {});
    this.holding.set(userId, (this.holding.get(userId) ?? 0) + 1);
    try { return await this.run(d); } finally {
      const left = (this.holding.get(userId) ?? 1) - 1;
      if (left > 0) this.holding.set(userId, left); else this.holding.delete(userId);
    }
  }

  /** Records that a job of `userId` arrived; users not seen for a window are forgotten, once per window. */
  private seen(userId: string): void {
    const now = this.deps.now();
    this.lastSeen.set(userId, now);
    if (now - this.prunedAt < this.deps.config.worker.fairWindowMs) return;
    this.prunedAt = now;
    const since = now - this.deps.config.worker.fairWindowMs;
    for (const [user, at] of this.lastSeen) if (at < since && !this.holding.has(user)) this.lastSeen.delete(user);
  }

  private prunedAt = 0;

  /**
   * True if `userId` already holds its fair share of the slots while other jobs wait. A queue that
   * dequeues fairly itself (the memory queue) needs no deferral.
   */
  private async overShare(userId: string): Promise<boolean> {
    const { config, queue } = this.deps;
    if (config.worker.fairDeferMs === 0 || queue.fairDequeue) return false;
    const held = this.holding.get(userId) ?? 0;
    if (held === 0) return false;
    const share = Math.max(1, Math.floor(this.slots / Math.max(1, this.lastSeen.size)));
    if (held < share) return false;
    return (await queue.depth().catch(() => 0)) > 0;
  }

  private async run(d: Delivery): Promise<void> {
    const { store, runner, config, logger } = this.deps;
    const id = d.job.requestId;
    try {
      const claim = await store.claimRequest(id, this.id, config.worker.claimMs);
      if (claim.state === 'missing') { logger.warn({ request_id: id }, 'job for an unknown request; dropped'); return await d.ack(); }
      if (claim.state === 'terminal') { await this.recoverEnded(claim.record); return await d.ack(); }
      if (claim.state === 'busy') return await d.retry(Math.max(50, claim.until - this.deps.now() + 50));
      const record = claim.record;
      // Attempts a draining process handed back do not count.
      if (record.attempt - record.handoffs > config.worker.maxAttempts) {
        await runner.end(record, runner.failed(record, 0, '', 'SLUICE_ERR_DEAD_LETTERED', `gave up after ${config.worker.maxAttempts} attempts`));
        this.deps.metrics?.deadLetters.inc();
        return await d.deadLetter('max attempts reached');
      }
      const result = await runner.run(record, this.id, { onRenew: () => d.heartbeat(), handoff: this.handoff.signal });
      // Unsettled: the consumer's close hands the job back for immediate redelivery elsewhere.
      if (result.kind === 'handoff') return;
      if (result.kind !== 'retry') return await d.ack();
      await d.retry(jitteredBackoff(record.attempt, config.worker.retryBaseMs));
    } catch (err) {
      logger.error({ request_id: id, err }, 'job failed unexpectedly; retrying');
      await d.retry(jitteredBackoff(d.deliveryCount, config.worker.retryBaseMs)).catch(() => {});
    }
  }

  /**
   * A job for a request that has already ended: usually a duplicate, but maybe the redelivery of
   * a job whose worker died after ending it in the store. Finishes what that worker left undone:
   * the terminal event in the log, and the ledger row's charge in the limiter (a no-op if settled).
   */
  private async recoverEnded(record: RequestRecord): Promise<void> {
    await this.deps.runner.repairTerminal(record);
    await this.deps.ledger.settleFromRow(record.id);
  }
}

/** AMQP's basic.qos prefetch count is 16 bits: the most jobs one consumer can hold. */
export const MAX_WORKER_SLOTS = 65_535;
/** Slots when neither worker.concurrency nor the model's capacity is known (a backend without a router). */
export const FALLBACK_WORKER_SLOTS = 1024;

/** A worker's slots: worker.concurrency when set, else the catalogue's capacity; at most MAX_WORKER_SLOTS. */
export function workerSlots(configured: number | undefined, capacity: number | undefined): number {
  const n = configured ?? (capacity !== undefined && Number.isFinite(capacity) && capacity > 0 ? capacity : FALLBACK_WORKER_SLOTS);
  return Math.max(1, Math.min(MAX_WORKER_SLOTS, Math.floor(n)));
}

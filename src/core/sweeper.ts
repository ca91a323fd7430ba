// The sweeper repairs what a crash can leave behind, so nothing accepted is lost and no
// reservation leaks:
// - a request whose job is lost is published again: a queued request whose job the queue never
//   confirmed (the publish failed, or its gateway died between insert and publish), or a running
//   one whose claim expired and that never had a job (direct mode: its gateway died). A request
//   whose job the queue confirmed is left alone however long it waits: the broker holds the job
//   durably and redelivers it if a worker dies (see Store.markPublished and docs/operations.md);
// - a reservation past its deadline is settled from the stored outcome, released if its request
//   never reached the store, or extended while its request is still alive;
// - a reservation left open by a worker that died between ending its request and settling the
//   limiter is settled with the ledger row's charge within seconds, not at its deadline.
import type { Config } from '../config.ts';
import type { Limiter } from '../ports/limiter.ts';
import type { Queue } from '../ports/queue.ts';
import { isEnded, type RequestRecord, type Store, type UsageRow } from '../ports/store.ts';
import type { Ledger } from './ledger.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { periodsAt, windowLimits, windowStart } from './quota-windows.ts';

const BATCH = 500;

export class Sweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;

  constructor(private readonly deps: {
    config: Config; store: Store; queue: Queue; limiter: Limiter; ledger: Ledger; logger: Logger; metrics: Metrics; now: () => number;
  }) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.sweepOnce().catch((err) => { this.deps.metrics.sweeperFailures.inc(); this.deps.logger.error({ err }, 'sweep failed'); }).finally(() => { this.running = null; });
    }, this.deps.config.sweepIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** requeued: jobs published again; reclaimed: reservations past their deadline; settled: ended requests' open reservations settled early. */
  async sweepOnce(): Promise<{ requeued: number; reclaimed: number; settled: number }> {
    const requeued = await this.requeue();
    return { requeued, ...await this.reclaimReservations() };
  }

  /** Publishes the jobs that are lost (see the header); workers claim by id, so a duplicate is harmless. */
  private async requeue(): Promise<number> {
    const { store, queue, config, now, metrics, logger } = this.deps;
    const lost = await store.listUnpublished({ createdBefore: new Date(now() - config.requeueAfterMs), limit: BATCH });
    let n = 0;
    for (const r of lost) {
      try {
        await queue.publish({ requestId: r.id, priority: r.priority, userId: r.userId, model: r.model });
      } catch (err) {
        // The queue is out: the rest wait for a later sweep; the reservations still get theirs.
        logger.warn({ request_id: r.id, err }, 'could not publish a lost job; retrying on the next sweep');
        break;
      }
      await store.markPublished(r.id);
      metrics.sweeperActions.inc({ action: r.status === 'queued' ? 'requeue_queued' : 'requeue_orphaned' });
      logger.info({ request_id: r.id, status: r.status, mode: r.mode }, 'published the job of a request whose job was lost');
      n++;
    }
    return n;
  }

  /**
   * One pass over the open reservations made more than `reservationSettleAfterMs` ago (their
   * deadline is their creation, or last extension, + request timeout + grace, so they all lie
   * before the horizon below), oldest first. Past its deadline, a reservation is reclaimed; before
   * it, one whose request already has its ledger row (its worker died between ending the request
   * and settling the limiter) is settled with that row's charge now, not minutes later.
   */
  private async reclaimReservations(): Promise<{ reclaimed: number; settled: number }> {
    const { store, limiter, config, now } = this.deps;
    const t = now();
    const horizon = t + config.worker.requestTimeoutMs + config.reservationGraceMs - config.reservationSettleAfterMs;
    const open = await limiter.expired(Math.max(t, horizon), BATCH);
    let reclaimed = 0;
    for (const res of open) if (res.deadlineAt < t) { await this.reclaim(res.requestId); reclaimed++; }
    // The rest are before their deadline: those whose request has ended, read in one statement (a
    // thousand open streams are a thousand open reservations, checked on every sweep).
    const live = open.filter((res) => res.deadlineAt >= t).map((res) => res.requestId);
    let settled = 0;
    for (const row of await store.ledgerRowsOf(live)) if (await this.settleEnded(row)) settled++;
    return { reclaimed, settled };
  }

  /** A reservation still open before its deadline whose request has ended: the ledger row's charge, applied once. */
  private async settleEnded(row: UsageRow): Promise<boolean> {
    const { ledger, metrics, logger } = this.deps;
    const result = await ledger.settleWithRow(row);
    // 'already-settled': the request's own settle won the race since the reservation was listed.
    if (result !== 'settled') return false;
    metrics.sweeperActions.inc({ action: 'settle_ended' });
    logger.info({ request_id: row.requestId }, 'settled an ended request whose reservation was left open');
    return true;
  }

  private async reclaim(requestId: string): Promise<void> {
    const { store, limiter, ledger, config, now, metrics, logger } = this.deps;
    const record = await store.getRequest(requestId);
    if (!record) {
      // Never stored: released as if never made (no settled mark, so a retry of the same
      // Idempotency-Key, which has the same id, reserves again instead of running unreserved).
      await limiter.release(requestId);
      metrics.sweeperActions.inc({ action: 'refund_reservation' });
      logger.info({ request_id: requestId }, 'released an expired reservation whose request was never stored');
      return;
    }
    if (!isEnded(record)) {
      await limiter.extend(requestId, now() + config.worker.requestTimeoutMs + config.reservationGraceMs);
      return;
    }
    // The ledger row is what the request was billed; the limiter must end on the same charge.
    // (Worked out again from the record, a request cancelled after its claim but before the
    // model ran was charged its prompt here and nothing in the ledger.) No row: refunded.
    if (await ledger.settleFromRow(requestId) === 'no-row') await ledger.settleQuota(requestId, { tokens: 0, requests: 0 });
    metrics.sweeperActions.inc({ action: 'settle_reservation' });
    logger.info({ request_id: requestId }, 'reclaimed an expired reservation');
  }

  /**
   * Embedded start-up (one process owns the store, queue and limiter are in memory): the previous
   * process is dead, so its claims are void; every unfinished request is enqueued again, and a
   * non-durable limiter is rebuilt from the ledger (settled usage) and the unfinished requests
   * (outstanding reservations), so a restart is never a free quota reset.
   */
  async recover(opts: { rebuildLimiter: boolean }): Promise<{ requeued: number; restoredUsers: number }> {
    const { store, queue, logger } = this.deps;
    await store.releaseAllClaims();
    const unfinished = await store.listUnfinished({ limit: 1_000_000 });
    let restoredUsers = 0;
    if (opts.rebuildLimiter) restoredUsers = await this.rebuildLimiter(unfinished);
    for (const r of unfinished) {
      await queue.publish({ requestId: r.id, priority: r.priority, userId: r.userId, model: r.model });
      await store.markPublished(r.id);
    }
    if (unfinished.length) logger.info({ requeued: unfinished.length }, 'recovered unfinished requests');
    return { requeued: unfinished.length, restoredUsers };
  }

  private async rebuildLimiter(unfinished: RequestRecord[]): Promise<number> {
    const { store, limiter, config, now } = this.deps;
    const t = now();
    const p = periodsAt(t, config.timeZone);
    const monthStart = new Date(windowStart(p.monthly.period, 'monthly', config.timeZone));
    const dayStart = windowStart(p.daily.period, 'daily', config.timeZone);
    const rows = await store.usageRows({ from: monthStart, to: new Date(t + 1) });
    const byUser = new Map<string, { day: { tokens: number; requests: number }; month: { tokens: number; requests: number } }>();
    for (const row of rows) {
      const u = byUser.get(row.userId) ?? { day: { tokens: 0, requests: 0 }, month: { tokens: 0, requests: 0 } };
      u.month.tokens += row.chargedTokens; u.month.requests += row.chargedRequests;
      if (row.settledAt.getTime() >= dayStart) { u.day.tokens += row.chargedTokens; u.day.requests += row.chargedRequests; }
      byUser.set(row.userId, u);
    }
    // The four windows of now, every limit set to `limit` (restoring and re-reserving never refuse).
    const windows = (limit: number) => windowLimits({ requestsPerDay: limit, tokensPerDay: limit, requestsPerMonth: limit, tokensPerMonth: limit }, t, config.timeZone);
    const current = windows(0);
    const daily = current.filter((w) => w.window === 'daily');
    const monthly = current.filter((w) => w.window === 'monthly');
    const unbounded = windows(Number.MAX_SAFE_INTEGER);
    for (const [userId, u] of byUser) {
      await limiter.restoreUsage(userId, daily, u.day);
      await limiter.restoreUsage(userId, monthly, u.month);
    }
    for (const r of unfinished) {
      if (r.userId === 'master') continue;
      await limiter.reserve({
        requestId: r.id, userId: r.userId, tokens: r.estimatedTokens,
        windows: unbounded,
        deadlineAt: t + config.worker.requestTimeoutMs + config.reservationGraceMs,
      });
    }
    return byUser.size;
  }
}

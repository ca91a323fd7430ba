// What the alerts on a stuck pipeline read (deploy/prometheus/alerts.yaml), sampled by the ledger
// role: how long the oldest queued request has waited for a worker, and how many quota
// reservations are still open past their deadline (their request should have settled by then;
// the sweeper reclaims them, so a count that stays above 0 means the sweeper cannot).
import type { Limiter } from '../ports/limiter.ts';
import type { Store } from '../ports/store.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';

/** Reservations counted per sample; the gauge saturates there (an alert needs > 0, not the exact number). */
export const BACKLOG_COUNT_LIMIT = 500;

export class BacklogGauges {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private failing = false;

  constructor(private readonly deps: {
    store: Store; limiter: Limiter; metrics: Metrics; logger: Logger; now: () => number; intervalMs: number;
  }) {}

  start(): void {
    this.timer = setInterval(() => { this.running ??= this.sampleOnce().finally(() => { this.running = null; }); }, this.deps.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One sample of both gauges; a failing read keeps the previous value (logged once per outage). */
  async sampleOnce(): Promise<void> {
    const { store, limiter, metrics, logger, now } = this.deps;
    try {
      const t = now();
      const oldest = await store.oldestQueuedAt();
      metrics.queueOldestAge.set(oldest ? Math.max(0, (t - oldest.getTime()) / 1000) : 0);
      const overdue = await limiter.expired(t, BACKLOG_COUNT_LIMIT);
      metrics.settlementBacklog.set(overdue.length);
      this.failing = false;
    } catch (err) {
      if (!this.failing) logger.warn({ err }, 'backlog gauges: sampling failed; keeping the last values');
      this.failing = true;
    }
  }
}

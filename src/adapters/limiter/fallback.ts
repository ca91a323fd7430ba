// Keeps admissions flowing when Redis is down (policy 'fallback': a per-process limiter serves
// meanwhile, the seed's behaviour) or turns them away with 503 (policy 'refuse'). Which failures
// count as "Redis is down" is decided by the durable adapter: SLUICE_ERR_LIMITER_UNAVAILABLE.
import { SluiceError, isSluiceError } from '../../core/errors.ts';
import type {
  LeaseResult, Limiter, Reservation, ReserveInput, ReserveResult, SettleResult, WindowLimit, WindowState,
} from '../../ports/limiter.ts';
import { MemoryLimiter } from './memory.ts';

/** A durable limiter that can be asked whether it answers again. */
export interface ProbedLimiter extends Limiter { ping(): Promise<void> }

export type FailurePolicy = 'fallback' | 'refuse';

export interface ResilientLimiterOptions {
  policy: FailurePolicy;
  /** Called once when an outage starts (log a warning). */
  onDegraded?: (reason: string) => void;
  /** Called once when the durable limiter answers again. */
  onRecovered?: () => void;
  /** How often a degraded limiter asks the durable one whether it is back. */
  probeIntervalMs?: number;
  /** Limiter used during an outage; per process. */
  local?: MemoryLimiter;
}

export class ResilientLimiter implements Limiter {
  /** The durable limiter holds the truth; the local one only bridges outages. */
  readonly durable = true;
  private readonly local: MemoryLimiter;
  private outage = false;
  private probe: NodeJS.Timeout | undefined;
  private probing = false;

  constructor(private readonly primary: ProbedLimiter, private readonly opts: ResilientLimiterOptions) {
    this.local = opts.local ?? new MemoryLimiter();
  }

  /** True while the durable limiter is unreachable. */
  get degraded(): boolean {
    return this.outage;
  }

  private async via<T>(durable: () => Promise<T>, local: () => Promise<T>): Promise<T> {
    if (this.outage && this.opts.policy === 'fallback') return local();
    try {
      const value = await durable();
      this.recovered();
      return value;
    } catch (e) {
      if (!isSluiceError(e, 'SLUICE_ERR_LIMITER_UNAVAILABLE')) throw e;
      this.degrade(e);
      if (this.opts.policy === 'refuse') throw e;
      return local();
    }
  }

  private degrade(e: SluiceError): void {
    if (this.outage) return;
    this.outage = true;
    const cause = e.cause instanceof Error ? `: ${e.cause.message}` : '';
    this.opts.onDegraded?.(`limiter unavailable${cause}; ${this.opts.policy === 'fallback' ? 'using a per-process limiter' : 'refusing admissions'}`);
    // Probed under both policies: 'refuse' would otherwise notice the recovery only at the next
    // admission, and the degraded gauge would stay up on an idle gateway.
    this.probe = setInterval(() => this.probeOnce(), this.opts.probeIntervalMs ?? 1000);
    this.probe.unref();
  }

  private probeOnce(): void {
    if (this.probing) return;
    this.probing = true;
    this.primary.ping().then(() => this.recovered(), () => {}).finally(() => { this.probing = false; });
  }

  private recovered(): void {
    if (!this.outage) return;
    this.outage = false;
    clearInterval(this.probe);
    this.probe = undefined;
    this.opts.onRecovered?.();
  }

  reserve(r: ReserveInput): Promise<ReserveResult> {
    return this.via(() => this.primary.reserve(r), () => this.local.reserve(r));
  }

  settle(requestId: string, charged: { tokens: number; requests: 0 | 1 }): Promise<SettleResult> {
    // A reservation taken during an outage is settled where it was taken.
    if (this.local.holds(requestId)) return this.local.settle(requestId, charged);
    return this.via(() => this.primary.settle(requestId, charged), () => this.local.settle(requestId, charged));
  }

  release(requestId: string): Promise<boolean> {
    if (this.local.holds(requestId)) return this.local.release(requestId);
    return this.via(() => this.primary.release(requestId), () => this.local.release(requestId));
  }

  usage(userId: string, windows: WindowLimit[]): Promise<WindowState[]> {
    return this.via(() => this.primary.usage(userId, windows), () => this.local.usage(userId, windows));
  }

  async expired(now: number, limit: number): Promise<Reservation[]> {
    const local = await this.local.expired(now, limit);
    const durable = await this.via(() => this.primary.expired(now, limit), async () => []);
    return [...durable, ...local].sort((a, b) => a.deadlineAt - b.deadlineAt).slice(0, limit);
  }

  extend(requestId: string, deadlineAt: number): Promise<boolean> {
    if (this.local.holds(requestId)) return this.local.extend(requestId, deadlineAt);
    return this.via(() => this.primary.extend(requestId, deadlineAt), () => this.local.extend(requestId, deadlineAt));
  }

  acquireLease(userId: string, leaseId: string, limit: number, ttlMs: number): Promise<LeaseResult> {
    return this.via(() => this.primary.acquireLease(userId, leaseId, limit, ttlMs), () => this.local.acquireLease(userId, leaseId, limit, ttlMs));
  }

  async refreshLease(userId: string, leaseId: string, ttlMs: number): Promise<boolean> {
    const refreshed = await this.via(() => this.primary.refreshLease(userId, leaseId, ttlMs), async () => false);
    // A lease taken during an outage lives in the local limiter.
    return refreshed || this.local.refreshLease(userId, leaseId, ttlMs);
  }

  /** The shared count plus the slots taken locally during an outage (0 shared while it lasts). */
  async activeLeases(userId: string): Promise<number> {
    const shared = await this.via(() => this.primary.activeLeases(userId), async () => 0);
    return shared + await this.local.activeLeases(userId);
  }

  async releaseLease(userId: string, leaseId: string): Promise<void> {
    await this.local.releaseLease(userId, leaseId);
    await this.via(() => this.primary.releaseLease(userId, leaseId), async () => {});
  }

  hit(key: string, limit: number, windowMs: number): Promise<{ ok: boolean; retryAfterMs: number }> {
    return this.via(() => this.primary.hit(key, limit, windowMs), () => this.local.hit(key, limit, windowMs));
  }

  restoreUsage(userId: string, windows: WindowLimit[], charged: { tokens: number; requests: number }): Promise<void> {
    return this.via(() => this.primary.restoreUsage(userId, windows, charged), () => this.local.restoreUsage(userId, windows, charged));
  }

  async close(): Promise<void> {
    clearInterval(this.probe);
    this.probe = undefined;
    await Promise.all([this.primary.close(), this.local.close()]);
  }
}

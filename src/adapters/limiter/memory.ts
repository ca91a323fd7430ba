// In-process limiter: the same contract as Redis for one process. Every operation runs whole,
// synchronously, which makes it atomic; results are delivered asynchronously like Redis.
import type {
  LeaseResult, Limiter, Metric, Reservation, ReserveInput, ReserveResult, SettleResult, WindowLimit, WindowState,
} from '../../ports/limiter.ts';
import {
  COUNTER_GRACE_MS, FENCE_TTL_MS, SETTLED_TTL_MS, amountFor, assertCharge, assertReserveInput, limiterKeys, windowState,
  type LimiterKeys,
} from './keys.ts';

interface Expiring { value: number; expiresAt: number }
interface Held { reservation: Reservation; counters: { key: string; metric: Metric }[] }

export interface MemoryLimiterOptions { prefix?: string; now?: () => number }

const HOUSEKEEPING_INTERVAL_MS = 60_000;
/** A microtask, not a macrotask: waiting for the next event-loop turn split the requests of one
 *  turn across turns, so the store's statement batches (store/batch.ts) formed smaller. */
const tick = () => Promise.resolve();
const copy = (r: Reservation): Reservation => ({ ...r, windows: r.windows.map((w) => ({ ...w })) });

export class MemoryLimiter implements Limiter {
  readonly durable = false;
  private readonly keys: LimiterKeys;
  private readonly now: () => number;
  private readonly counters = new Map<string, Expiring>();
  private readonly held = new Map<string, Held>();
  /** userId -> count of its held reservations (the in-flight cap). */
  private readonly open = new Map<string, number>();
  /** Settled request id -> when it may be forgotten. */
  private readonly settled = new Map<string, number>();
  /** userId -> leaseId -> expiry. */
  private readonly leases = new Map<string, Map<string, number>>();
  private readonly fences = new Map<string, Expiring>();
  private readonly hits = new Map<string, Expiring>();
  private nextHousekeeping = 0;

  constructor(opts: MemoryLimiterOptions = {}) {
    this.keys = limiterKeys(opts.prefix ?? '');
    this.now = opts.now ?? Date.now;
  }

  /** Runs `fn` atomically after the caller's synchronous code, never re-entrantly inside it. */
  private async atomically<T>(fn: (now: number) => T): Promise<T> {
    await tick();
    const now = this.now();
    if (now >= this.nextHousekeeping) this.forgetExpired(now);
    return fn(now);
  }

  /** Bounds memory: drops expired counters, settled ids, hit windows and fences. */
  private forgetExpired(now: number): void {
    this.nextHousekeeping = now + HOUSEKEEPING_INTERVAL_MS;
    for (const map of [this.counters, this.fences, this.hits]) {
      for (const [k, v] of map) if (v.expiresAt <= now) map.delete(k);
    }
    // Settled ids share one lifetime, so the map is in forgetting order: stop at the first kept one.
    for (const [id, forgetAt] of this.settled) {
      if (forgetAt > now) break;
      this.settled.delete(id);
    }
    for (const userId of this.leases.keys()) this.liveLeases(userId, now);
  }

  private read(map: Map<string, Expiring>, key: string, now: number): number {
    const e = map.get(key);
    if (!e) return 0;
    if (e.expiresAt <= now) { map.delete(key); return 0; }
    return e.value;
  }

  private add(key: string, amount: number, expiresAt: number, now: number): number {
    const value = this.read(this.counters, key, now) + amount;
    this.counters.set(key, { value, expiresAt });
    return value;
  }

  reserve(r: ReserveInput): Promise<ReserveResult> {
    return this.atomically((now) => {
      assertReserveInput(r);
      const keys = r.windows.map((w) => this.keys.counter(r.userId, w));
      const used = keys.map((k) => this.read(this.counters, k, now));
      const states = () => r.windows.map((w, i) => windowState(w, used[i] ?? 0));
      if (this.held.has(r.requestId) || this.settled.has(r.requestId)) return { ok: true, duplicate: true, windows: states() };
      const open = this.open.get(r.userId) ?? 0;
      if (r.maxInFlight !== undefined && open >= r.maxInFlight) {
        return { ok: false, reason: 'in_flight', inFlight: { open, limit: r.maxInFlight }, windows: states() };
      }
      const failed = r.windows.findIndex((w, i) => (used[i] ?? 0) + amountFor(w, r.tokens) > w.limit);
      if (failed >= 0) {
        const windows = states();
        return { ok: false, reason: 'window', exceeded: windows[failed] as WindowState, windows };
      }
      this.open.set(r.userId, open + 1);
      r.windows.forEach((w, i) => { used[i] = this.add(keys[i] as string, amountFor(w, r.tokens), w.resetAt + COUNTER_GRACE_MS, now); });
      this.held.set(r.requestId, {
        reservation: copy({ requestId: r.requestId, userId: r.userId, tokens: r.tokens, windows: r.windows, deadlineAt: r.deadlineAt }),
        counters: r.windows.map((w, i) => ({ key: keys[i] as string, metric: w.metric })),
      });
      return { ok: true, duplicate: false, windows: states() };
    });
  }

  settle(requestId: string, charged: { tokens: number; requests: 0 | 1 }): Promise<SettleResult> {
    return this.atomically((now): SettleResult => {
      assertCharge(charged);
      if (!this.unhold(requestId, charged, now)) return this.settled.has(requestId) ? 'already-settled' : 'unknown';
      this.settled.set(requestId, now + SETTLED_TTL_MS);
      return 'settled';
    });
  }

  release(requestId: string): Promise<boolean> {
    return this.atomically((now) => this.unhold(requestId, { tokens: 0, requests: 0 }, now));
  }

  /** Replaces a held reservation by `charged` in each of its counters; false if none was held. */
  private unhold(requestId: string, charged: { tokens: number; requests: 0 | 1 }, now: number): boolean {
    const h = this.held.get(requestId);
    if (!h) return false;
    for (const c of h.counters) {
      const delta = c.metric === 'tokens' ? charged.tokens - h.reservation.tokens : charged.requests - 1;
      const counter = this.counters.get(c.key);
      // Like Redis: a counter that expired with its period is not recreated.
      if (delta !== 0 && counter && counter.expiresAt > now) counter.value = Math.max(0, counter.value + delta);
    }
    this.held.delete(requestId);
    const open = (this.open.get(h.reservation.userId) ?? 1) - 1;
    if (open > 0) this.open.set(h.reservation.userId, open); else this.open.delete(h.reservation.userId);
    return true;
  }

  usage(userId: string, windows: WindowLimit[]): Promise<WindowState[]> {
    return this.atomically((now) => windows.map((w) => windowState(w, this.read(this.counters, this.keys.counter(userId, w), now))));
  }

  expired(now: number, limit: number): Promise<Reservation[]> {
    return this.atomically(() => [...this.held.values()]
      .map((h) => h.reservation)
      .filter((r) => r.deadlineAt < now)
      .sort((a, b) => a.deadlineAt - b.deadlineAt)
      .slice(0, limit)
      .map(copy));
  }

  extend(requestId: string, deadlineAt: number): Promise<boolean> {
    return this.atomically(() => {
      const h = this.held.get(requestId);
      if (h) h.reservation.deadlineAt = deadlineAt;
      return h !== undefined;
    });
  }

  /** The user's unexpired leases; expired ones are dropped on the way. */
  private liveLeases(userId: string, now: number): Map<string, number> {
    const mine = this.leases.get(userId) ?? new Map<string, number>();
    for (const [id, expiresAt] of mine) if (expiresAt <= now) mine.delete(id);
    if (mine.size === 0) this.leases.delete(userId);
    return mine;
  }

  acquireLease(userId: string, leaseId: string, limit: number, ttlMs: number): Promise<LeaseResult> {
    return this.atomically((now): LeaseResult => {
      const mine = this.liveLeases(userId, now);
      if (!mine.has(leaseId) && mine.size >= limit) return { ok: false, active: mine.size, limit };
      mine.set(leaseId, now + ttlMs);
      this.leases.set(userId, mine);
      const fence = this.read(this.fences, userId, now) + 1;
      this.fences.set(userId, { value: fence, expiresAt: now + FENCE_TTL_MS });
      return { ok: true, fence };
    });
  }

  refreshLease(userId: string, leaseId: string, ttlMs: number): Promise<boolean> {
    return this.atomically((now) => {
      const mine = this.liveLeases(userId, now);
      if (!mine.has(leaseId)) return false;
      mine.set(leaseId, now + ttlMs);
      return true;
    });
  }

  activeLeases(userId: string): Promise<number> {
    return this.atomically((now) => this.liveLeases(userId, now).size);
  }

  releaseLease(userId: string, leaseId: string): Promise<void> {
    return this.atomically(() => {
      const mine = this.leases.get(userId);
      mine?.delete(leaseId);
      if (mine?.size === 0) this.leases.delete(userId);
    });
  }

  hit(key: string, limit: number, windowMs: number): Promise<{ ok: boolean; retryAfterMs: number }> {
    return this.atomically((now) => {
      const k = this.keys.hit(key);
      let w = this.hits.get(k);
      if (!w || w.expiresAt <= now) { w = { value: 0, expiresAt: now + windowMs }; this.hits.set(k, w); }
      w.value += 1;
      return w.value <= limit ? { ok: true, retryAfterMs: 0 } : { ok: false, retryAfterMs: Math.max(1, w.expiresAt - now) };
    });
  }

  restoreUsage(userId: string, windows: WindowLimit[], charged: { tokens: number; requests: number }): Promise<void> {
    return this.atomically((now) => {
      assertCharge(charged);
      for (const w of windows) this.add(this.keys.counter(userId, w), amountFor(w, charged.tokens, charged.requests), w.resetAt + COUNTER_GRACE_MS, now);
    });
  }

  /** True while `requestId` holds an unsettled reservation here (the fallback routes by it). */
  holds(requestId: string): boolean {
    return this.held.has(requestId);
  }

  async close(): Promise<void> {
    await tick();
  }
}

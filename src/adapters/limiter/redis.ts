// Redis limiter: every check-and-change is one Lua script, so concurrent gateways can never
// overshoot a limit. One user's keys carry the `{userId}` hash tag and share a cluster slot, but
// reserve/settle/extend also touch two global keys (the request-id index, needed because settle
// only gets a request id, and the sweeper's deadline set): standalone or Sentinel Redis only.
import { readFileSync } from 'node:fs';
import type { Redis, RedisOptions } from 'ioredis';
import { SluiceError } from '../../core/errors.ts';
import { connectCause, hostPort, withConnectTimeout } from '../endpoint.ts';
import type {
  LeaseResult, Limiter, Reservation, ReserveInput, ReserveResult, SettleResult, WindowLimit, WindowState,
} from '../../ports/limiter.ts';
import {
  COUNTER_GRACE_MS, FENCE_TTL_MS, SETTLED_TTL_MS, amountFor, assertCharge, assertReserveInput, limiterKeys, windowState,
  type LimiterKeys,
} from './keys.ts';

const SCRIPTS = ['reserve', 'settle', 'extend', 'lease-acquire', 'lease-refresh', 'lease-release', 'lease-count', 'hit'] as const;
type Script = typeof SCRIPTS[number];

/** The codes the Lua scripts return as their first element (see each file's header). */
const STATUS = { 0: 'ok', 1: 'duplicate', 2: 'refused', 3: 'already-settled', 4: 'unknown', 5: 'in-flight' } as const;
type Status = typeof STATUS[keyof typeof STATUS];

/** The one place a script's numeric reply becomes a status; anything else is a bug. */
function decodeReply(script: Script, reply: unknown): { status: Status; values: number[] } {
  if (Array.isArray(reply) && reply.every((v) => typeof v === 'number')) {
    const [code, ...values] = reply as number[];
    if (code !== undefined && code in STATUS) return { status: STATUS[code as keyof typeof STATUS], values };
  }
  throw new SluiceError('SLUICE_ERR_INTERNAL', `limiter script ${script} returned an unexpected reply`, { reply });
}

type ScriptCommand = (numKeys: number, ...args: (string | number)[]) => Promise<unknown>;

export interface RedisLimiterOptions { prefix?: string }

export class RedisLimiter implements Limiter {
  readonly durable = true;
  private readonly keys: LimiterKeys;
  /** The client's last connection error, cleared when it is ready: what an outage message names. */
  private connectError: unknown;

  private constructor(
    private readonly client: Redis,
    private readonly isServerReply: (e: unknown) => boolean,
    opts: RedisLimiterOptions,
    private readonly where: string,
  ) {
    client.on('error', (e) => { this.connectError = e; });
    client.on('ready', () => { this.connectError = undefined; });
    this.keys = limiterKeys(opts.prefix ?? '');
    for (const name of SCRIPTS) {
      const lua = readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8');
      client.defineCommand(commandName(name), { lua });
    }
  }

  /**
   * Connects (failing fast: no offline queue, one retry per command) and returns the limiter even
   * when Redis is down, so a fallback wrapper can serve meanwhile; the client keeps reconnecting.
   */
  static async connect(url: string, opts: RedisLimiterOptions & { connectTimeoutMs?: number } = {}): Promise<RedisLimiter> {
    const { Redis: RedisClient, ReplyError } = await import('ioredis');
    const options: RedisOptions = {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: opts.connectTimeoutMs ?? 1000,
      commandTimeout: 2000,
      retryStrategy: (times) => Math.min(times * 200, 2000),
      // The commands of every request handled in one event-loop turn (a reserve each, under load
      // hundreds) leave as one write and come back as one read: one round trip, not one each.
      enableAutoPipelining: true,
    };
    const client = new RedisClient(url, options);
    // Connection errors surface on the commands that fail (and name the host there).
    const replyError = ReplyError as new (...args: unknown[]) => Error;
    const limiter = new RedisLimiter(client, (e) => e instanceof replyError, opts, hostPort(url));
    // Bounded: a Redis that accepts the socket but never answers must not hold the start.
    await withConnectTimeout(options.connectTimeout ?? 1000, client.connect(), () => {}).catch(() => {});
    return limiter;
  }

  /** Resolves when Redis answers; rejects with SLUICE_ERR_LIMITER_UNAVAILABLE otherwise. */
  async ping(): Promise<void> {
    await this.call(() => this.client.ping());
  }

  /** The one place Redis failures enter the error catalogue. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof SluiceError) throw e;
      // A server reply error is a bug on our side; anything else means Redis did not answer.
      if (this.isServerReply(e)) throw new SluiceError('SLUICE_ERR_INTERNAL', 'limiter command failed', undefined, { cause: e });
      const why = new Error(`Redis at ${this.where} (LIMITER_URL): ${connectCause(this.connectError ?? e)}`, { cause: e });
      throw new SluiceError('SLUICE_ERR_LIMITER_UNAVAILABLE', undefined, undefined, { cause: why });
    }
  }

  private async run(script: Script, keys: string[], args: (string | number)[]): Promise<{ status: Status; values: number[] }> {
    const command = (this.client as unknown as Record<string, ScriptCommand>)[commandName(script)];
    if (!command) throw new SluiceError('SLUICE_ERR_INTERNAL', `limiter script ${script} is not defined`);
    const reply = await this.call(() => command.call(this.client, keys.length, ...keys, ...args));
    return decodeReply(script, reply);
  }

  async reserve(r: ReserveInput): Promise<ReserveResult> {
    assertReserveInput(r);
    const k = this.keys;
    const counters = r.windows.map((w) => k.counter(r.userId, w));
    const perWindow = r.windows.flatMap((w) => [amountFor(w, r.tokens), w.limit, w.resetAt + COUNTER_GRACE_MS]);
    const { status, values } = await this.run('reserve',
      [k.reservation(r.userId, r.requestId), k.settled(r.userId, r.requestId), k.reservationIndex(r.requestId), k.deadlines, k.open(r.userId), ...counters],
      [r.requestId, r.userId, r.tokens, r.deadlineAt, JSON.stringify(r.windows),
        JSON.stringify(r.windows.map((w, i) => [counters[i], w.metric])), r.maxInFlight ?? -1, ...perWindow]);
    const [detail = 0, ...used] = values;
    const windows = r.windows.map((w, i) => windowState(w, used[i] ?? 0));
    if (status === 'ok' || status === 'duplicate') return { ok: true, duplicate: status === 'duplicate', windows };
    if (status === 'in-flight' && r.maxInFlight !== undefined) return { ok: false, reason: 'in_flight', inFlight: { open: detail, limit: r.maxInFlight }, windows };
    const exceeded = windows[detail - 1];
    if (status !== 'refused' || !exceeded) throw new SluiceError('SLUICE_ERR_INTERNAL', `reserve returned ${status}`);
    return { ok: false, reason: 'window', exceeded, windows };
  }

  async settle(requestId: string, charged: { tokens: number; requests: 0 | 1 }): Promise<SettleResult> {
    assertCharge(charged);
    const status = await this.runSettle(requestId, charged, false);
    return status === 'ok' ? 'settled' : status;
  }

  async release(requestId: string): Promise<boolean> {
    return (await this.runSettle(requestId, { tokens: 0, requests: 0 }, true)) === 'ok';
  }

  /** settle.lua, found through the request's index key; `release` leaves no settled marker. */
  private async runSettle(requestId: string, charged: { tokens: number; requests: 0 | 1 }, release: boolean): Promise<'ok' | 'already-settled' | 'unknown'> {
    const userId = await this.call(() => this.client.get(this.keys.reservationIndex(requestId)));
    if (userId === null) return 'unknown';
    const k = this.keys;
    const { status } = await this.run('settle',
      [k.reservation(userId, requestId), k.settled(userId, requestId), k.reservationIndex(requestId), k.deadlines, k.open(userId)],
      [requestId, charged.tokens, charged.requests, SETTLED_TTL_MS, release ? '1' : '0']);
    if (status === 'ok' || status === 'already-settled' || status === 'unknown') return status;
    throw new SluiceError('SLUICE_ERR_INTERNAL', `settle.lua returned ${status}`);
  }

  async usage(userId: string, windows: WindowLimit[]): Promise<WindowState[]> {
    if (windows.length === 0) return [];
    const values = await this.call(() => this.client.mget(windows.map((w) => this.keys.counter(userId, w))));
    return windows.map((w, i) => windowState(w, Number(values[i] ?? 0)));
  }

  async expired(now: number, limit: number): Promise<Reservation[]> {
    const ids = await this.call(() => this.client.zrangebyscore(this.keys.deadlines, '-inf', `(${now}`, 'LIMIT', 0, limit));
    if (ids.length === 0) return [];
    const users = await this.call(() => this.client.mget(ids.map((id) => this.keys.reservationIndex(id))));
    const pipeline = this.client.pipeline();
    for (const [i, requestId] of ids.entries()) pipeline.hgetall(this.keys.reservation(users[i] ?? '', requestId));
    const hashes = (await this.call(() => pipeline.exec())) ?? [];
    const found: Reservation[] = [];
    for (const [i, requestId] of ids.entries()) {
      const userId = users[i];
      const h = hashes[i]?.[1] as Record<string, string> | undefined;
      // Settled between the reads: no longer outstanding.
      if (!userId || h?.windows === undefined) continue;
      found.push({ requestId, userId, tokens: Number(h.tokens), windows: JSON.parse(h.windows) as WindowLimit[], deadlineAt: Number(h.deadline) });
    }
    return found;
  }

  async extend(requestId: string, deadlineAt: number): Promise<boolean> {
    const userId = await this.call(() => this.client.get(this.keys.reservationIndex(requestId)));
    if (userId === null) return false;
    const { status } = await this.run('extend', [this.keys.reservation(userId, requestId), this.keys.deadlines], [requestId, deadlineAt]);
    return status === 'ok';
  }

  async acquireLease(userId: string, leaseId: string, limit: number, ttlMs: number): Promise<LeaseResult> {
    const { status, values } = await this.run('lease-acquire',
      [this.keys.leases(userId), this.keys.leaseFence(userId)], [leaseId, limit, Math.ceil(ttlMs), FENCE_TTL_MS]);
    const [value = 0] = values;
    return status === 'ok' ? { ok: true, fence: value } : { ok: false, active: value, limit };
  }

  async refreshLease(userId: string, leaseId: string, ttlMs: number): Promise<boolean> {
    const { status } = await this.run('lease-refresh', [this.keys.leases(userId)], [leaseId, Math.ceil(ttlMs)]);
    return status === 'ok';
  }

  async releaseLease(userId: string, leaseId: string): Promise<void> {
    await this.run('lease-release', [this.keys.leases(userId)], [leaseId]);
  }

  async activeLeases(userId: string): Promise<number> {
    const { values } = await this.run('lease-count', [this.keys.leases(userId)], []);
    return values[0] ?? 0;
  }

  async hit(key: string, limit: number, windowMs: number): Promise<{ ok: boolean; retryAfterMs: number }> {
    const { status, values } = await this.run('hit', [this.keys.hit(key)], [limit, Math.ceil(windowMs)]);
    return status === 'ok' ? { ok: true, retryAfterMs: 0 } : { ok: false, retryAfterMs: Math.max(1, values[0] ?? 1) };
  }

  async restoreUsage(userId: string, windows: WindowLimit[], charged: { tokens: number; requests: number }): Promise<void> {
    assertCharge(charged);
    const tx = this.client.multi();
    for (const w of windows) {
      const key = this.keys.counter(userId, w);
      tx.incrby(key, amountFor(w, charged.tokens, charged.requests)).pexpireat(key, w.resetAt + COUNTER_GRACE_MS);
    }
    await this.call(() => tx.exec());
  }

  async close(): Promise<void> {
    if (this.client.status === 'ready') await this.client.quit().catch(() => this.client.disconnect());
    else this.client.disconnect();
  }
}

function commandName(script: Script): string {
  return `sluice_${script.replace('-', '_')}`;
}

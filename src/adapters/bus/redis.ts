// Redis Bus: one stream per request (replay by XRANGE), a counter for the sequence, and pub/sub for
// live fan-out, all written by one Lua script so sequence, log, TTL and publish never disagree.
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { SluiceError, isSluiceError } from '../../core/errors.ts';
import { answerAfterEnd, assertBurst, isTerminal, type Bus, type ControlSignal, type EventBody, type LogEvent, type Subscription } from '../../ports/bus.ts';
import { decodingEvents, InterestFanout } from './fanout.ts';
import { ConnectTimeout, unreachable, withConnectTimeout } from '../endpoint.ts';

const APPEND_LUA = readFileSync(new URL('./lua/append.lua', import.meta.url), 'utf8');

export interface RedisBusOptions { ttlSeconds: number; maxLen: number; prefix: string }

/** The script registered with `defineCommand`; ioredis runs it by EVALSHA with an EVAL fallback. */
interface AppendCommand {
  /** The first sequence number appended, or the JSON of the log's terminal event if it already ended. */
  sluiceBusAppend(stream: string, seqKey: string, endKey: string, channel: string, ttl: number, maxLen: number, endsLog: '0' | '1', ...bodies: string[]): Promise<number | string>;
}

export class RedisBus implements Bus {
  private readonly deliverers = new Map<string, (message: string) => void>();
  /** Live events arrive decoded (once per message, however many local listeners). */
  private readonly events = new InterestFanout<LogEvent>((channel, deliver) => this.listen(channel, decodingEvents(deliver)));
  private readonly control = new InterestFanout<string>((channel, deliver) => this.listen(channel, deliver));
  private subscriber: Redis | undefined;

  constructor(private readonly redis: Redis, private readonly opts: RedisBusOptions) {
    redis.defineCommand('sluiceBusAppend', { numberOfKeys: 3, lua: APPEND_LUA });
  }

  async append(requestId: string, event: EventBody): Promise<LogEvent> {
    return (await this.appendMany(requestId, [event]))[0]!;
  }

  async appendMany(requestId: string, events: readonly EventBody[]): Promise<LogEvent[]> {
    if (events.length === 0) return [];
    assertBurst(events);
    const ts = Date.now();
    const bodies = events.map((e) => ({ ...e, ts }));
    const stream = this.streamKey(requestId);
    const endsLog = isTerminal(events[events.length - 1]!) ? '1' : '0';
    const reply = await guard(() => (this.redis as unknown as AppendCommand).sluiceBusAppend(
      stream, `${stream}:seq`, `${stream}:end`, this.liveChannel(requestId), this.opts.ttlSeconds, this.opts.maxLen, endsLog,
      ...bodies.map((b) => JSON.stringify(b)),
    ));
    if (typeof reply === 'string') return answerAfterEnd(JSON.parse(reply) as LogEvent, events);
    const first = Number(reply);
    // The bodies are this call's own copies, already sent: they become the logged events.
    return bodies.map((b, i) => Object.assign(b, { seq: first + i }) as LogEvent);
  }

  async read(requestId: string, afterSeq: number, limit?: number): Promise<LogEvent[]> {
    if (limit !== undefined && limit <= 0) return [];
    const start = `${Math.max(0, Math.floor(afterSeq)) + 1}-0`;
    const key = this.streamKey(requestId);
    const entries = await guard(() => (limit === undefined
      ? this.redis.xrange(key, start, '+')
      : this.redis.xrange(key, start, '+', 'COUNT', limit)));
    return entries.map(([, fields]) => JSON.parse(fieldValue(fields, 'e')) as LogEvent);
  }

  async terminal(requestId: string): Promise<LogEvent | undefined> {
    const key = this.streamKey(requestId);
    const json = await guard(() => this.redis.get(`${key}:end`));
    if (json !== null) return JSON.parse(json) as LogEvent;
    // A log written before the :end marker existed (a rolling upgrade) ends with its terminal event
    // all the same: read it there, so a repair does not append a second one.
    const [top] = await guard(() => this.redis.xrevrange(key, '+', '-', 'COUNT', 1));
    const last = top && (JSON.parse(fieldValue(top[1], 'e')) as LogEvent);
    return last && isTerminal(last) ? last : undefined;
  }

  async subscribe(requestId: string, onEvent: (e: LogEvent) => void): Promise<Subscription> {
    return this.events.add(this.liveChannel(requestId), onEvent);
  }

  async publishControl(requestId: string, signal: ControlSignal): Promise<void> {
    await guard(() => this.redis.publish(this.controlChannel(requestId), signal));
  }

  async onControl(requestId: string, onSignal: (signal: ControlSignal) => void): Promise<Subscription> {
    return this.control.add(this.controlChannel(requestId), (m) => { if (m === 'cancel') onSignal(m); });
  }

  async close(): Promise<void> {
    await Promise.all([this.events.closeAll(), this.control.closeAll()]);
    this.subscriber?.disconnect();
    this.subscriber = undefined;
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  /** SUBSCRIBEs on this instance's one subscriber connection; resolves to the UNSUBSCRIBE. */
  private async listen(channel: string, deliver: (message: string) => void): Promise<() => Promise<void>> {
    const sub = this.subscriberConnection();
    this.deliverers.set(channel, deliver);
    try {
      await guard(() => sub.subscribe(channel));
    } catch (err) {
      if (this.deliverers.get(channel) === deliver) this.deliverers.delete(channel);
      throw err;
    }
    return async () => {
      if (this.deliverers.get(channel) !== deliver) return;
      this.deliverers.delete(channel);
      // Commands on one connection run in order, so a re-SUBSCRIBE sent later still wins.
      await sub.unsubscribe(channel).catch(() => undefined);
    };
  }

  private subscriberConnection(): Redis {
    if (!this.subscriber) {
      const sub = this.redis.duplicate();
      sub.on('message', (channel: string, message: string) => this.deliverers.get(channel)?.(message));
      // Reconnects re-subscribe on their own; a listener's gap is repaired from the log by its reader.
      sub.on('error', () => undefined);
      this.subscriber = sub;
    }
    return this.subscriber;
  }

  private streamKey(requestId: string): string { return `${this.opts.prefix}:events:{${requestId}}`; }
  private liveChannel(requestId: string): string { return `${this.opts.prefix}:live:{${requestId}}`; }
  private controlChannel(requestId: string): string { return `${this.opts.prefix}:control:{${requestId}}`; }
}

function fieldValue(fields: string[], name: string): string {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1] as string;
  throw new SluiceError('SLUICE_ERR_INTERNAL', `Event log entry has no "${name}" field`);
}

/** The one place Redis failures become catalogue errors. */
async function guard<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (isSluiceError(err)) throw err;
    throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'Event bus (Redis) is unavailable', undefined, { cause: err });
  }
}

/**
 * Connects and returns a Bus over it. A Redis that cannot be reached fails the start at once (one
 * attempt, within `connectTimeoutMs`, default 5 s), naming the host and the socket error; once
 * connected, ioredis' own reconnect strategy (50 ms steps up to 2 s) rides out outages.
 */
export async function createRedisBus(url: string, opts: RedisBusOptions & { connectTimeoutMs?: number }): Promise<RedisBus> {
  const { Redis } = await import('ioredis');
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
  let connected = false;
  let lastError: unknown;
  const redis = new Redis(url, {
    lazyConnect: true, maxRetriesPerRequest: 3, connectTimeout: connectTimeoutMs,
    retryStrategy: (times) => (connected ? Math.min(times * 50, 2000) : null),
  });
  // connect() itself rejects with a bare "Connection is closed"; the socket error comes here.
  redis.on('error', (e) => { lastError = e; });
  try {
    await withConnectTimeout(connectTimeoutMs, redis.connect(), () => redis.disconnect());
    connected = true;
  } catch (err) {
    // Otherwise ioredis keeps reconnecting in the background and holds the process open.
    redis.disconnect();
    throw unreachable({ service: 'bus', field: 'BUS_URL', url }, err instanceof ConnectTimeout ? err : lastError ?? err);
  }
  return new RedisBus(redis, opts);
}

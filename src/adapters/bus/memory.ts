// In-process Bus: the embedded default. Asynchronous like the real adapters (appends resolve and
// listeners fire on later turns of the event loop), so code tested against it does not come to
// rely on synchronous re-entrancy that Redis or NATS would never give it.
import { SluiceError } from '../../core/errors.ts';
import type { Bus, ControlSignal, EventBody, LogEvent, Subscription } from '../../ports/bus.ts';

/** Opens the native subscription for a topic; resolves to the function that closes it. */
export type OpenTopic<T> = (topic: string, deliver: (message: T) => void) => Promise<() => Promise<void>>;

interface Topic<T> { listeners: Set<(message: T) => void>; closer: Promise<() => Promise<void>> }

/**
 * Interest-based local fan-out shared by every Bus adapter: one native subscription per topic per
 * process, opened when the topic's first local listener arrives and closed when its last leaves.
 */
export class InterestFanout<T> {
  private readonly topics = new Map<string, Topic<T>>();

  constructor(private readonly open: OpenTopic<T>) {}

  /** Resolves once the native subscription is active, so messages published afterwards arrive. */
  async add(topic: string, listener: (message: T) => void): Promise<Subscription> {
    let entry = this.topics.get(topic);
    if (!entry) {
      const listeners = new Set<(message: T) => void>();
      // A message delivered on a closed topic reaches this entry's (by then empty) set, never a
      // newer entry for the same topic, so a quick close-and-reopen cannot duplicate.
      const created: Topic<T> = { listeners, closer: this.open(topic, (m) => emitTo(listeners, m)) };
      created.closer.catch(() => { if (this.topics.get(topic) === created) this.topics.delete(topic); });
      this.topics.set(topic, created);
      entry = created;
    }
    const active = entry;
    active.listeners.add(listener);
    try {
      await active.closer;
    } catch (err) {
      active.listeners.delete(listener);
      throw err;
    }
    let closed = false;
    return {
      close: async () => {
        if (closed) return;
        closed = true;
        active.listeners.delete(listener);
        if (active.listeners.size > 0 || this.topics.get(topic) !== active) return;
        this.topics.delete(topic);
        await (await active.closer)();
      },
    };
  }

  /** Topics with at least one local listener. */
  get size(): number { return this.topics.size; }

  /** Drops every listener and closes every native subscription. */
  async closeAll(): Promise<void> {
    const entries = [...this.topics.values()];
    this.topics.clear();
    await Promise.allSettled(entries.map(async (e) => { e.listeners.clear(); await (await e.closer)(); }));
  }
}

function emitTo<T>(listeners: Set<(message: T) => void>, message: T): void {
  for (const listener of [...listeners]) {
    // One listener's failure must not starve the others of the event.
    try { listener(message); } catch { /* isolated on purpose */ }
  }
}

interface EventLog { events: LogEvent[]; lastSeq: number; expiresAt: number }

export interface MemoryBusOptions { ttlSeconds: number; maxLen: number }

export class MemoryBus implements Bus {
  private readonly logs = new Map<string, EventLog>();
  private readonly deliverers = new Map<string, (message: string) => void>();
  private readonly fanout: InterestFanout<string>;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly opts: MemoryBusOptions) {
    this.fanout = new InterestFanout<string>(async (topic, deliver) => {
      this.deliverers.set(topic, deliver);
      return async () => { if (this.deliverers.get(topic) === deliver) this.deliverers.delete(topic); };
    });
    // Lazy expiry alone would keep logs nobody reads again forever; unref'd so it never holds the process.
    this.sweeper = setInterval(() => this.sweep(), Math.min(opts.ttlSeconds * 1000, 60_000));
    this.sweeper.unref();
  }

  async append(requestId: string, event: EventBody): Promise<LogEvent> {
    this.assertOpen();
    const now = Date.now();
    let log = this.live(requestId, now);
    if (!log) { log = { events: [], lastSeq: 0, expiresAt: 0 }; this.logs.set(requestId, log); }
    log.lastSeq += 1;
    log.expiresAt = now + this.opts.ttlSeconds * 1000;
    const stored: LogEvent = { ...structuredClone(event), seq: log.lastSeq, ts: now };
    log.events.push(stored);
    if (log.events.length > this.opts.maxLen) log.events.splice(0, log.events.length - this.opts.maxLen);
    // Serialised like a real broker would, so listeners never share (or mutate) the stored object.
    this.publish(liveTopic(requestId), JSON.stringify(stored));
    await Promise.resolve();
    return structuredClone(stored);
  }

  async read(requestId: string, afterSeq: number, limit = Number.POSITIVE_INFINITY): Promise<LogEvent[]> {
    this.assertOpen();
    await Promise.resolve();
    const log = this.live(requestId, Date.now());
    if (!log) return [];
    const out: LogEvent[] = [];
    for (const e of log.events) {
      if (out.length >= limit) break;
      if (e.seq > afterSeq) out.push(structuredClone(e));
    }
    return out;
  }

  async subscribe(requestId: string, onEvent: (e: LogEvent) => void): Promise<Subscription> {
    this.assertOpen();
    return this.fanout.add(liveTopic(requestId), (m) => onEvent(JSON.parse(m) as LogEvent));
  }

  async publishControl(requestId: string, signal: ControlSignal): Promise<void> {
    this.assertOpen();
    this.publish(controlTopic(requestId), signal);
    await Promise.resolve();
  }

  async onControl(requestId: string, onSignal: (signal: ControlSignal) => void): Promise<Subscription> {
    this.assertOpen();
    return this.fanout.add(controlTopic(requestId), (m) => { if (m === 'cancel') onSignal(m); });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    await this.fanout.closeAll();
    this.logs.clear();
  }

  private publish(topic: string, message: string): void {
    const deliver = this.deliverers.get(topic);
    if (deliver) setImmediate(deliver, message);
  }

  private live(requestId: string, now: number): EventLog | undefined {
    const log = this.logs.get(requestId);
    if (log && log.expiresAt <= now) { this.logs.delete(requestId); return undefined; }
    return log;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, log] of this.logs) if (log.expiresAt <= now) this.logs.delete(id);
  }

  private assertOpen(): void {
    if (this.closed) throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'Bus is closed');
  }
}

const liveTopic = (requestId: string): string => `events:${requestId}`;
const controlTopic = (requestId: string): string => `control:${requestId}`;

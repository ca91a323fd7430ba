// In-process Bus: the embedded default. Asynchronous like the real adapters (appends resolve and
// listeners fire on later turns of the event loop), so code tested against it does not come to
// rely on synchronous re-entrancy that Redis or NATS would never give it.
import { SluiceError } from '../../core/errors.ts';
import type { Bus, ControlSignal, EventBody, LogEvent, Subscription } from '../../ports/bus.ts';
import { InterestFanout } from './fanout.ts';

interface EventLog { events: LogEvent[]; lastSeq: number; expiresAt: number }

export interface MemoryBusOptions { ttlSeconds: number; maxLen: number }

export class MemoryBus implements Bus {
  private readonly logs = new Map<string, EventLog>();
  private readonly deliverers = new Map<string, (message: Message) => void>();
  private readonly fanout: InterestFanout<Message>;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly opts: MemoryBusOptions) {
    this.fanout = new InterestFanout<Message>(async (topic, deliver) => {
      this.deliverers.set(topic, deliver);
      return async () => { if (this.deliverers.get(topic) === deliver) this.deliverers.delete(topic); };
    });
    // Lazy expiry alone would keep logs nobody reads again forever; unref'd so it never holds the process.
    this.sweeper = setInterval(() => this.sweep(), Math.min(opts.ttlSeconds * 1000, 60_000));
    this.sweeper.unref();
  }

  async append(requestId: string, event: EventBody): Promise<LogEvent> {
    return (await this.appendMany(requestId, [event]))[0]!;
  }

  async appendMany(requestId: string, events: readonly EventBody[]): Promise<LogEvent[]> {
    this.assertOpen();
    if (events.length === 0) return [];
    const now = Date.now();
    let log = this.live(requestId, now);
    if (!log) { log = { events: [], lastSeq: 0, expiresAt: 0 }; this.logs.set(requestId, log); }
    log.expiresAt = now + this.opts.ttlSeconds * 1000;
    // Shared: the log, every listener and every reader see one object, so no copy or serialisation
    // is paid per token per listener (the appender's own object is copied, so it cannot alter the log).
    const stored = events.map((e) => storedEvent(e, ++log.lastSeq, now));
    for (const e of stored) log.events.push(e);
    if (log.events.length > this.opts.maxLen) log.events.splice(0, log.events.length - this.opts.maxLen);
    this.publish(liveTopic(requestId), stored);
    await Promise.resolve();
    return stored;
  }

  async read(requestId: string, afterSeq: number, limit = Number.POSITIVE_INFINITY): Promise<LogEvent[]> {
    this.assertOpen();
    await Promise.resolve();
    const log = this.live(requestId, Date.now());
    if (!log) return [];
    const out: LogEvent[] = [];
    for (const e of log.events) {
      if (out.length >= limit) break;
      if (e.seq > afterSeq) out.push(e);
    }
    return out;
  }

  async subscribe(requestId: string, onEvent: (e: LogEvent) => void): Promise<Subscription> {
    this.assertOpen();
    return this.fanout.add(liveTopic(requestId), (m) => { if (typeof m !== 'string') onEvent(m); });
  }

  async publishControl(requestId: string, signal: ControlSignal): Promise<void> {
    this.assertOpen();
    this.publish(controlTopic(requestId), [signal]);
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

  /** Delivers on a later turn, in order. */
  private publish(topic: string, messages: readonly Message[]): void {
    const deliver = this.deliverers.get(topic);
    if (deliver) setImmediate(() => { for (const m of messages) deliver(m); });
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

/** Live events and control signals share the fan-out. */
type Message = LogEvent | ControlSignal;

/**
 * The stored event is shared with every listener and reader, read-only by contract (LogEvent is
 * used as a value everywhere; nothing assigns to it). Not Object.freeze: freezing moved V8 objects
 * to a slow path and cost 5 % of the gateway's CPU per token.
 */
function storedEvent(event: EventBody, seq: number, ts: number): LogEvent {
  // Tokens are the hot path: a literal of fixed shape is several times cheaper than a spread.
  if (event.type === 'token') return { type: 'token', attempt: event.attempt, text: event.text, seq, ts };
  const stored = { ...event, seq, ts } as LogEvent;
  if ('usage' in stored) stored.usage = { ...stored.usage };
  return stored;
}

const liveTopic = (requestId: string): string => `events:${requestId}`;
const controlTopic = (requestId: string): string => `control:${requestId}`;

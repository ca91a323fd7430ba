// In-process Bus: the embedded default. Asynchronous like the real adapters (appends resolve and
// listeners fire on later turns of the event loop), so code tested against it does not come to
// rely on synchronous re-entrancy that Redis or NATS would never give it.
//
// Its logs live in the heap, so besides the TTL they are bounded by a count of events kept: past
// `maxEvents`, the logs of ended requests go first, least recently ended or read first (a resume
// then gets the stored result, as after the TTL). The log of a running request, or of one somebody
// is subscribed to, is never dropped: a listener part-way through a log keeps it. Without the
// bound, a TTL of an hour at 1,000 streamed requests/s is ~30 GB of heap.
import { SluiceError } from '../../core/errors.ts';
import { answerAfterEnd, assertBurst, isTerminal, type Bus, type ControlSignal, type EventBody, type LogEvent, type Subscription } from '../../ports/bus.ts';
import { InterestFanout } from './fanout.ts';

interface EventLog { events: LogEvent[]; lastSeq: number; expiresAt: number; terminal?: LogEvent }

export interface MemoryBusOptions {
  ttlSeconds: number;
  maxLen: number;
  /** Events kept over all logs before ended requests' logs are dropped (default 1,000,000). */
  maxEvents?: number | undefined;
}

const DEFAULT_MEMORY_MAX_EVENTS = 1_000_000;

export class MemoryBus implements Bus {
  private readonly logs = new Map<string, EventLog>();
  /** Requests whose log holds its terminal event, least recently ended or read first. */
  private readonly ended = new Set<string>();
  /** Events over all logs. */
  private kept = 0;
  private readonly maxEvents: number;
  private readonly deliverers = new Map<string, (message: Message) => void>();
  private readonly fanout: InterestFanout<Message>;
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly opts: MemoryBusOptions) {
    this.maxEvents = opts.maxEvents ?? DEFAULT_MEMORY_MAX_EVENTS;
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
    assertBurst(events);
    const now = Date.now();
    let log = this.live(requestId, now);
    if (log?.terminal) { const terminal = log.terminal; await Promise.resolve(); return answerAfterEnd(terminal, events); }
    if (!log) { log = { events: [], lastSeq: 0, expiresAt: 0 }; this.logs.set(requestId, log); }
    log.expiresAt = now + this.opts.ttlSeconds * 1000;
    // Shared: the log, every listener and every reader see one object, so no copy or serialisation
    // is paid per token per listener (the appender's own object is copied, so it cannot alter the log).
    const stored = events.map((e) => storedEvent(e, ++log.lastSeq, now));
    for (const e of stored) log.events.push(e);
    this.kept += stored.length;
    if (log.events.length > this.opts.maxLen) this.kept -= log.events.splice(0, log.events.length - this.opts.maxLen).length;
    const last = stored[stored.length - 1]!;
    if (isTerminal(last)) { log.terminal = last; this.ended.add(requestId); }
    if (this.kept > this.maxEvents) this.dropEnded();
    this.publish(liveTopic(requestId), stored);
    await Promise.resolve();
    return stored;
  }

  async read(requestId: string, afterSeq: number, limit = Number.POSITIVE_INFINITY): Promise<LogEvent[]> {
    this.assertOpen();
    await Promise.resolve();
    const log = this.live(requestId, Date.now());
    if (!log) return [];
    // A reader pages through a log with a read per page: the log it reads goes to the back of the line.
    if (this.ended.delete(requestId)) this.ended.add(requestId);
    const out: LogEvent[] = [];
    for (const e of log.events) {
      if (out.length >= limit) break;
      if (e.seq > afterSeq) out.push(e);
    }
    return out;
  }

  async terminal(requestId: string): Promise<LogEvent | undefined> {
    this.assertOpen();
    await Promise.resolve();
    return this.live(requestId, Date.now())?.terminal;
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
    this.ended.clear();
    this.kept = 0;
  }

  /** Events kept over all logs (for tests and the bound). */
  get keptEvents(): number { return this.kept; }

  /** Delivers on a later turn, in order. */
  private publish(topic: string, messages: readonly Message[]): void {
    const deliver = this.deliverers.get(topic);
    if (deliver) setImmediate(() => { for (const m of messages) deliver(m); });
  }

  private live(requestId: string, now: number): EventLog | undefined {
    const log = this.logs.get(requestId);
    if (log && log.expiresAt <= now) { this.drop(requestId, log); return undefined; }
    return log;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, log] of this.logs) if (log.expiresAt <= now) this.drop(id, log);
  }

  /** Over the bound: drops the logs of ended requests, least recently ended or read first, unless subscribed to. */
  private dropEnded(): void {
    for (const id of this.ended) {
      if (this.kept <= this.maxEvents) return;
      if (this.deliverers.has(liveTopic(id))) continue;
      this.drop(id, this.logs.get(id)!);
    }
  }

  private drop(requestId: string, log: EventLog): void {
    this.logs.delete(requestId);
    this.ended.delete(requestId);
    this.kept -= log.events.length;
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
  // Tokens are the hot path: a literal of fixed shape is several times cheaper than a spread. A
  // token of another choice, or with logprobs, takes the general path below.
  if (event.type === 'token' && event.choice === undefined && event.logprobs === undefined) return { type: 'token', attempt: event.attempt, text: event.text, seq, ts };
  const stored = { ...event, seq, ts } as LogEvent;
  if ('usage' in stored) stored.usage = { ...stored.usage };
  return stored;
}

const liveTopic = (requestId: string): string => `events:${requestId}`;
const controlTopic = (requestId: string): string => `control:${requestId}`;

// NATS Bus: one JetStream stream holds every request's log (one subject per request, replayed by
// direct get), core subscriptions on the same subjects carry live events (a JetStream publish is
// also delivered to core subscribers), and core subjects carry control signals.
//
// The sequence is assigned optimistically: read the subject's last event, publish seq+1 expecting
// that event's stream sequence as the subject's last (Nats-Expected-Last-Subject-Sequence), and
// re-read on a wrong-last-sequence refusal. Appends from one instance to one request are
// serialised locally, so only writers on other instances ever collide.
//
// A log ends with one terminal event: the append checks the tip it publishes after, and the
// publish is conditional on that tip still being the subject's last, so no event (and no second
// terminal event) can follow a terminal one.
//
// Replay starts from the requested position: the subject's messages hold their log sequence in
// increasing stream order, so a search by stream sequence (interpolation, then halving) finds the
// first event to replay in a few direct gets, and a short-lived pull consumer starting there fetches
// the rest in batches. The consumer is created in one request and deleted without waiting: the
// client's ordered consumer costs two more round trips per read (a stream info and its own create).
//
// TTL differs slightly from Redis: the stream's max_age ages each event on its own, so a log
// expires event by event rather than all at once ttl seconds after its last append.
import { randomUUID } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import type { JetStreamClient, JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import { SluiceError, isSluiceError } from '../../core/errors.ts';
import { answerAfterEnd, assertBurst, isTerminal, PartialAppendError, type Bus, type ControlSignal, type EventBody, type LogEvent, type Subscription } from '../../ports/bus.ts';
import { decodingEvents, InterestFanout } from './fanout.ts';
import { unreachable } from '../endpoint.ts';

export interface NatsBusOptions {
  ttlSeconds: number; maxLen: number; prefix: string; stream: string;
  /**
   * The JetStream domain that holds the stream, when it is not this server's own: an edge connected
   * to a leaf node reads and appends through the hub's API (`$JS.<domain>.API`), while its live
   * subscriptions stay core subjects that cross the leaf connection only while someone listens.
   */
  domain?: string | undefined;
  /**
   * 'own' (default): create the stream or bring it to this configuration. 'use': the stream belongs
   * to another deployment (an edge uses the origin's): create it only if it is missing, never
   * reconfigure it, so an edge with other settings cannot fight the origin over its limits.
   */
  streamOwnership?: 'own' | 'use' | undefined;
  /**
   * Live subjects quiet for this long have their log's last event read (one direct get) and, if
   * it is newer than what arrived live, handed to their listeners, whose merge by seq then fills
   * the gap from the log. Core NATS is at-most-once: a leaf node cut from its hub loses what was
   * published meanwhile, and a stream that ended during the cut would otherwise never learn it.
   * 0 = off (the default; an edge turns it on).
   */
  idleProbeMs?: number | undefined;
}

/** A followed request's subject, watched for silence (idleProbeMs). */
interface Watch { lastSeq: number; lastAt: number; probing: boolean; deliver: (e: LogEvent) => void }
/** Quiet subjects probed at once per tick, at most. */
const PROBES_PER_TICK = 64;
/**
 * Through a domain (a leaf node), how long a read keeps retrying while the hub's JetStream API has
 * no route ("no responders": the leaf's link to the hub is down; it reconnects every second).
 */
const DOMAIN_READ_RETRY_MS = 5_000;

/** The JetStream API error codes this adapter reacts to (nats-server's stable err_code values). */
const WRONG_LAST_SEQUENCE = 10071;
const STREAM_NOT_FOUND = 10059;
const MAX_APPEND_TRIES = 200;
const NANOS_PER_SECOND = 1_000_000_000;
const MAX_TIP_CACHE = 10_000;

/** Replays of this many events or fewer use direct gets; longer ones an ordered consumer. */
const DIRECT_READ_MAX = 8;
/** Events fetched per consumer pull. */
const READ_BATCH = 256;
/** Bound on one consumer pull's wait (the events are known to exist, so this is only a safety net). */
const READ_FETCH_EXPIRES_MS = 5000;
/** The server deletes a read's consumer after this long unused, should its explicit delete be lost. */
const READ_CONSUMER_IDLE_NANOS = 30 * NANOS_PER_SECOND;

/** Last known event of a request's subject: its sequence and its JetStream stream sequence; `terminal` if it ends the log. */
interface Tip { seq: number; streamSeq: number; terminal?: LogEvent | undefined }

/** An event of the log with its JetStream stream sequence. */
interface Stored { event: LogEvent; streamSeq: number }

/** The parts of @nats-io/jetstream used here; the module is loaded only when a nats: URL is chosen. */
interface JetStreamModule { JetStreamApiError: new (...args: never[]) => Error & { code: number } }

export class NatsBus implements Bus {
  /** Live events arrive decoded (once per message, however many local listeners). */
  private readonly events = new InterestFanout<LogEvent>((subject, deliver) => this.listenEvents(subject, deliver));
  private readonly watched = new Map<string, Watch>();
  private probeTimer: NodeJS.Timeout | undefined;
  private readonly control = new InterestFanout<string>((subject, deliver) => this.listen(subject, deliver));
  private readonly tips = new Map<string, Tip>();
  private readonly appending = new Map<string, Promise<unknown>>();
  private readonly decoder = new TextDecoder();
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly mod: JetStreamModule,
    private readonly opts: NatsBusOptions,
  ) {}

  /** A core subscription to `subject`; resolves once the server has the interest, so later publishes arrive. */
  private async listen(subject: string, receive: (message: string) => void): Promise<() => Promise<void>> {
    const sub = this.nc.subscribe(subject, { callback: (err, msg) => { if (!err) receive(this.decoder.decode(msg.data)); } });
    await guard(() => this.nc.flush());
    return async () => { sub.unsubscribe(); };
  }

  /** Live events of one request's subject; watched for silence when idleProbeMs is set. */
  private async listenEvents(subject: string, deliver: (e: LogEvent) => void): Promise<() => Promise<void>> {
    const probeMs = this.opts.idleProbeMs ?? 0;
    if (probeMs <= 0) return this.listen(subject, decodingEvents(deliver));
    const watch: Watch = { lastSeq: 0, lastAt: Date.now(), probing: false, deliver };
    const close = await this.listen(subject, decodingEvents((e) => {
      if (e.seq > watch.lastSeq) watch.lastSeq = e.seq;
      watch.lastAt = Date.now();
      deliver(e);
    }));
    this.watched.set(subject, watch);
    this.probeTimer ??= setInterval(() => this.probeQuiet(probeMs), Math.max(50, Math.floor(probeMs / 2))).unref();
    return async () => {
      if (this.watched.get(subject) === watch) this.watched.delete(subject);
      if (this.watched.size === 0 && this.probeTimer) { clearInterval(this.probeTimer); this.probeTimer = undefined; }
      await close();
    };
  }

  /** Reads the last event of every subject quiet for probeMs; a newer one than arrived live is delivered. */
  private probeQuiet(probeMs: number): void {
    const now = Date.now();
    let started = 0;
    for (const [subject, watch] of this.watched) {
      if (started >= PROBES_PER_TICK) break;
      if (watch.probing || now - watch.lastAt < probeMs) continue;
      started++;
      watch.probing = true;
      this.lastStored(subject).then((tip) => {
        watch.lastAt = Date.now();
        if (!tip || tip.event.seq <= watch.lastSeq || this.watched.get(subject) !== watch) return;
        watch.lastSeq = tip.event.seq;
        watch.deliver(tip.event);
      }, () => { /* the hub is out of reach (a cut leaf link): the next tick tries again */ })
        .finally(() => { watch.probing = false; });
    }
  }

  async append(requestId: string, event: EventBody): Promise<LogEvent> {
    return (await this.appendMany(requestId, [event]))[0]!;
  }

  /**
   * One publish per event (each conditional on the one before), one after another in this
   * request's local queue: NATS gains no round trip from a burst. Not atomic: a failure part-way
   * throws PartialAppendError with the events already logged.
   */
  async appendMany(requestId: string, events: readonly EventBody[]): Promise<LogEvent[]> {
    if (events.length === 0) return [];
    assertBurst(events);
    const previous = this.appending.get(requestId) ?? Promise.resolve();
    const result = previous.catch(() => undefined).then(async () => {
      const out: LogEvent[] = [];
      for (const event of events) {
        try {
          out.push(await this.appendNow(requestId, event));
        } catch (err) {
          throw out.length > 0 ? new PartialAppendError(out, { cause: err }) : err;
        }
      }
      return out;
    });
    this.appending.set(requestId, result);
    try {
      return await result;
    } finally {
      if (this.appending.get(requestId) === result) this.appending.delete(requestId);
    }
  }

  async read(requestId: string, afterSeq: number, limit = Number.POSITIVE_INFINITY): Promise<LogEvent[]> {
    const subject = this.eventSubject(requestId);
    if (limit <= 0) return [];
    const tip = await this.lastStored(subject);
    if (!tip || tip.event.seq <= afterSeq) return [];
    const first = tip.event.seq === afterSeq + 1 ? tip : await this.locate(subject, afterSeq + 1, tip);
    const want = Math.min(limit, tip.event.seq - first.event.seq + 1);
    const out = want <= DIRECT_READ_MAX
      ? await this.readDirect(subject, first, tip.streamSeq, want)
      : await this.readBatched(subject, first.streamSeq, tip.streamSeq, want);
    return out.filter((e) => e.seq > afterSeq);
  }

  async terminal(requestId: string): Promise<LogEvent | undefined> {
    const tip = await this.lastStored(this.eventSubject(requestId));
    return tip && isTerminal(tip.event) ? tip.event : undefined;
  }

  async subscribe(requestId: string, onEvent: (e: LogEvent) => void): Promise<Subscription> {
    return this.events.add(this.eventSubject(requestId), onEvent);
  }

  async publishControl(requestId: string, signal: ControlSignal): Promise<void> {
    await guard(async () => {
      this.nc.publish(this.controlSubject(requestId), this.encoder.encode(signal));
      await this.nc.flush();
    });
  }

  async onControl(requestId: string, onSignal: (signal: ControlSignal) => void): Promise<Subscription> {
    return this.control.add(this.controlSubject(requestId), (m) => { if (m === 'cancel') onSignal('cancel'); });
  }

  async close(): Promise<void> {
    if (this.probeTimer) { clearInterval(this.probeTimer); this.probeTimer = undefined; }
    await Promise.all([this.events.closeAll(), this.control.closeAll()]);
    this.watched.clear();
    if (!this.nc.isClosed()) await this.nc.close();
  }

  private async appendNow(requestId: string, event: EventBody): Promise<LogEvent> {
    const subject = this.eventSubject(requestId);
    // Stays the same across retries of this append, so a duplicate ack can only mean our own write.
    const nonce = randomUUID();
    for (let tries = 0; tries < MAX_APPEND_TRIES; tries++) {
      const cached = this.tips.get(requestId);
      // A cached end is checked against the server: the log may have expired and started over.
      const tip = (cached && !cached.terminal ? cached : await this.lastOf(subject)) ?? { seq: 0, streamSeq: 0 };
      if (tip.terminal) return answerAfterEnd(tip.terminal, [event])[0]!;
      const stored: LogEvent = { ...event, seq: tip.seq + 1, ts: Date.now() };
      try {
        const ack = await this.js.publish(subject, this.encoder.encode(JSON.stringify(stored)), {
          msgID: `${requestId}:${event.attempt}:${stored.seq}:${nonce}`,
          expect: { lastSubjectSequence: tip.streamSeq },
        });
        this.remember(requestId, { seq: stored.seq, streamSeq: ack.seq, terminal: isTerminal(stored) ? stored : undefined });
        return stored;
      } catch (err) {
        this.tips.delete(requestId);
        if (!this.isWrongLastSequence(err)) throw toSluiceError(err);
        // Another instance appended first: back off a little so two writers do not keep colliding.
        if (tries > 2) await new Promise((r) => setTimeout(r, Math.random() * Math.min(tries, 20)));
      }
    }
    throw new SluiceError('SLUICE_ERR_UNAVAILABLE', `Could not append to the event log of ${requestId}: too much contention`);
  }

  private async lastOf(subject: string): Promise<Tip | undefined> {
    const last = await this.lastStored(subject);
    if (!last) return undefined;
    return { seq: last.event.seq, streamSeq: last.streamSeq, terminal: isTerminal(last.event) ? last.event : undefined };
  }

  /**
   * A JetStream read. Through a domain, a read that finds no route to the hub (its leaf link is
   * down) is retried with backoff for up to DOMAIN_READ_RETRY_MS, so a short cut delays a
   * listener instead of closing its stream; any other failure, or a longer cut, throws.
   */
  private async jsRead<T>(op: () => Promise<T>): Promise<T> {
    if (!this.opts.domain) return guard(op);
    const deadline = Date.now() + DOMAIN_READ_RETRY_MS;
    for (let wait = 50; ; wait = Math.min(wait * 2, 1000)) {
      try { return await op(); } catch (err) {
        if (!noResponders(err) || Date.now() + wait > deadline) throw toSluiceError(err);
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  private async lastStored(subject: string): Promise<Stored | undefined> {
    const m = await this.jsRead(() => this.jsm.direct.getMessage(this.opts.stream, { last_by_subj: subject }));
    return m ? { event: this.decode(m.data), streamSeq: m.seq } : undefined;
  }

  /** The subject's first message at stream sequence `from` or later (one direct get). */
  private async nextStored(subject: string, from: number): Promise<Stored | undefined> {
    const m = await this.jsRead(() => this.jsm.direct.getMessage(this.opts.stream, { seq: from, next_by_subj: subject }));
    return m ? { event: this.decode(m.data), streamSeq: m.seq } : undefined;
  }

  /**
   * The subject's first event with log sequence >= `target`, given its last (`tip`, whose sequence
   * is >= target). Log sequences grow with stream sequences, so this searches stream sequences:
   * the first probe is the subject's first event, then interpolation (exact when the request's
   * events are evenly spread over the stream), halving every other probe after the third so a
   * skewed spread still costs O(log n) direct gets.
   */
  private async locate(subject: string, target: number, tip: Stored): Promise<Stored> {
    let lo = { seq: 0, streamSeq: 0 };
    let hi = tip;
    // The answer's stream sequence is within (lo.streamSeq, bound], or is hi itself.
    let bound = tip.streamSeq;
    for (let probe = 0; lo.streamSeq < bound; probe++) {
      const guess = probe === 0 ? lo.streamSeq + 1
        : probe > 2 && probe % 2 === 1 ? Math.floor((lo.streamSeq + 1 + bound) / 2)
          : lo.streamSeq + Math.ceil((target - lo.seq) * (hi.streamSeq - lo.streamSeq) / (hi.event.seq - lo.seq));
      const at = Math.min(bound, Math.max(lo.streamSeq + 1, guess));
      const m = await this.nextStored(subject, at);
      if (!m) break;
      if (m.event.seq === target) return m;
      if (m.event.seq < target) { lo = { seq: m.event.seq, streamSeq: m.streamSeq }; continue; }
      if (m.streamSeq <= hi.streamSeq) hi = m;
      bound = at - 1;
    }
    return hi;
  }

  /** `want` events from `first` on, one direct get each (short replays: fewer round trips than a consumer). */
  private async readDirect(subject: string, first: Stored, lastStreamSeq: number, want: number): Promise<LogEvent[]> {
    const out = [first.event];
    let at = first;
    while (out.length < want && at.streamSeq < lastStreamSeq) {
      const m = await this.nextStored(subject, at.streamSeq + 1);
      if (!m) break;
      out.push(m.event);
      at = m;
    }
    return out;
  }

  /**
   * `want` events from stream sequence `from` on, through a consumer of this read only, in batches.
   * Each pull asks for exactly the events still wanted, which exist, so it never waits for `expires`.
   */
  private async readBatched(subject: string, from: number, lastStreamSeq: number, want: number): Promise<LogEvent[]> {
    const info = await this.jsRead(() => this.jsm.consumers.add(this.opts.stream, {
      filter_subject: subject,
      deliver_policy: 'by_start_sequence',
      opt_start_seq: from,
      ack_policy: 'none',
      mem_storage: true,
      num_replicas: 1,
      inactive_threshold: READ_CONSUMER_IDLE_NANOS,
    }));
    const consumer = this.js.consumers.getConsumerFromInfo(info);
    const out: LogEvent[] = [];
    try {
      let done = false;
      while (!done && out.length < want) {
        const batch = await guard(() => consumer.fetch({ max_messages: Math.min(READ_BATCH, want - out.length), expires: READ_FETCH_EXPIRES_MS }));
        let got = 0;
        for await (const m of batch) {
          got++;
          out.push(this.decode(m.data));
          if (m.seq >= lastStreamSeq || out.length >= want) { done = true; batch.stop(); break; }
        }
        if (got === 0) done = true;
      }
    } finally {
      // Not awaited: the events are already here, and the idle threshold removes a consumer whose delete is lost.
      consumer.delete().catch(() => undefined);
    }
    return out;
  }

  private remember(requestId: string, tip: Tip): void {
    this.tips.delete(requestId);
    this.tips.set(requestId, tip);
    if (this.tips.size > MAX_TIP_CACHE) {
      const oldest = this.tips.keys().next().value;
      if (oldest !== undefined) this.tips.delete(oldest);
    }
  }

  private isWrongLastSequence(err: unknown): boolean {
    return err instanceof this.mod.JetStreamApiError && err.code === WRONG_LAST_SEQUENCE;
  }

  private decode(data: Uint8Array): LogEvent {
    return JSON.parse(this.decoder.decode(data)) as LogEvent;
  }

  private eventSubject(requestId: string): string { return `${this.opts.prefix}.events.${subjectToken(requestId)}`; }
  private controlSubject(requestId: string): string { return `${this.opts.prefix}.control.${subjectToken(requestId)}`; }
}

/** Request ids become one subject token; ids with characters NATS reserves are encoded. */
function subjectToken(requestId: string): string {
  return /^[A-Za-z0-9_-]+$/.test(requestId) ? requestId : `~${Buffer.from(requestId).toString('base64url')}`;
}

/** Whether a NATS failure (or one it wraps) is "no responders": nothing serves that subject now. */
function noResponders(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e.name === 'NoResponders') return true;
  }
  return false;
}

/** The one place NATS failures become catalogue errors. */
function toSluiceError(err: unknown): SluiceError {
  if (isSluiceError(err)) return err;
  return new SluiceError('SLUICE_ERR_UNAVAILABLE', 'Event bus (NATS) is unavailable', undefined, { cause: err });
}

async function guard<T>(op: () => Promise<T>): Promise<T> {
  try { return await op(); } catch (err) { throw toSluiceError(err); }
}

function streamConfig(opts: NatsBusOptions): Partial<StreamConfig> & { name: string } {
  return {
    name: opts.stream,
    subjects: [`${opts.prefix}.events.>`],
    max_age: opts.ttlSeconds * NANOS_PER_SECOND,
    max_msgs_per_subject: opts.maxLen,
    // The server refuses a duplicate window longer than max_age.
    duplicate_window: Math.min(opts.ttlSeconds, 120) * NANOS_PER_SECOND,
    allow_direct: true,
  };
}

/** Creates the stream, or brings an existing one to this configuration. */
async function ensureStream(jsm: JetStreamManager, mod: JetStreamModule, opts: NatsBusOptions): Promise<void> {
  const cfg = streamConfig(opts);
  try {
    await jsm.streams.info(opts.stream);
    if (opts.streamOwnership === 'use') return;
  } catch (err) {
    if (!(err instanceof mod.JetStreamApiError && err.code === STREAM_NOT_FOUND)) throw toSluiceError(err);
    try {
      await jsm.streams.add(cfg);
      return;
    } catch (addErr) {
      // Another instance may have created it meanwhile; the update below reconciles either way.
      if (!(addErr instanceof mod.JetStreamApiError)) throw toSluiceError(addErr);
    }
  }
  try {
    await jsm.streams.update(opts.stream, cfg);
  } catch (err) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `Cannot configure JetStream stream ${opts.stream} for the event bus`, undefined, { cause: err });
  }
}

/** A JetStream domain name as nats-server accepts it in `jetstream { domain: … }` (one subject token). */
const DOMAIN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Connects, ensures the stream and returns a Bus over it. `?stream=NAME` in the URL overrides the
 * stream name; `?domain=NAME` (or opts.domain) reaches the stream through that JetStream domain
 * (an edge behind a leaf node: `nats://leaf:4222?domain=hub`).
 */
export async function createNatsBus(url: string, opts: Omit<NatsBusOptions, 'stream'> & { stream?: string; connectTimeoutMs?: number }): Promise<NatsBus> {
  const parsed = new URL(url);
  const stream = opts.stream ?? parsed.searchParams.get('stream') ?? `${opts.prefix.toUpperCase()}_EVENTS`.replace(/[^A-Za-z0-9_-]/g, '_');
  const domain = parsed.searchParams.get('domain') ?? opts.domain;
  if (domain !== undefined && domain !== null && !DOMAIN.test(domain)) {
    throw new SluiceError('SLUICE_ERR_CONFIG', `BUS_URL: the JetStream domain "${domain.slice(0, 70)}" is not a valid name (1-64 of A-Z a-z 0-9 _ -)`, { param: 'busUrl' });
  }
  const full: NatsBusOptions = { ...opts, stream, ...(domain ? { domain } : {}) };
  const [{ connect }, mod] = await Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream')]);
  let nc: Awaited<ReturnType<typeof connect>>;
  try {
    nc = await connect({ servers: `${parsed.hostname}:${parsed.port || '4222'}`, timeout: opts.connectTimeoutMs ?? 5000, ...credentials(parsed) });
  } catch (err) {
    throw unreachable({ service: 'bus', field: 'BUS_URL', url }, err);
  }
  try {
    const jsOpts = full.domain ? { domain: full.domain } : {};
    const jsm = await guard(() => mod.jetstreamManager(nc, jsOpts));
    await ensureStream(jsm, mod, full);
    return new NatsBus(nc, mod.jetstream(nc, jsOpts), jsm, mod, full);
  } catch (err) {
    await nc.close();
    throw err;
  }
}

function credentials(u: URL): { user?: string; pass?: string } {
  if (!u.username) return {};
  return { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) };
}

// NATS JetStream queue (@nats-io/jetstream, NATS server 2.9+; no newer server features).
//
// Streams, declared on connect (names derive from the queue name, e.g. sluice.requests →
// SLUICE_REQUESTS_JOBS / SLUICE_REQUESTS_DLQ):
//   <BASE>_JOBS  work-queue retention, file storage, subjects <name>.jobs.<priority>
//   <BASE>_DLQ   limits retention, subject <name>.dlq: jobs given up on, with the reason in a header
// and one durable pull consumer per priority, <BASE>_P<priority>, explicit ack, ack_wait from the
// options, max_deliver -1: the worker decides when to dead-letter from deliveryCount.
//
// Priority approximation: JetStream has no priorities, so a consumer asks the priority consumers
// for one message each, highest first (`no_wait` pull requests), and takes the first it gets.
// With nothing waiting it sleeps until a core subscription on <name>.jobs.* hears a publish (a
// doorbell), a local retry delay ends, or a rescan interval passes (for redeliveries after another
// process's nak delay or an ack_wait expiry, which ring no bell). So: among jobs available when a
// consumer has a free slot, a higher priority is always taken first; FIFO within a priority.
// The high-level consume()/fetch() API has no no_wait pull, hence the raw pull request and the
// ack protocol (+ACK, -NAK, +WPI) on the message's reply subject.
//
// Dedupe: Nats-Msg-Id is `<requestId>:<random per publish() call>`. It suppresses duplicates from
// our own retries of one publish() (a PubAck lost in a reconnect), yet a later, deliberate
// re-publish of the same request (the sweeper) always goes through, even within the duplicate
// window after the first message was consumed.
//
// Reconnects are the client's (unlimited attempts); pull requests that fail meanwhile are retried
// by the consumer loop, so consuming resumes by itself after a server restart.
import { randomUUID } from 'node:crypto';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { ConsumeOptions, Consumer, Delivery, Job, Queue } from '../../ports/queue.ts';
import { exponentialBackoff } from '../../core/backoff.ts';
import { unreachable } from '../endpoint.ts';
import { clampPriority, jobBody, noop, runHandler, unavailable, optionalJobFields } from './common.ts';

export interface NatsQueueOptions {
  name: string;
  retryBaseMs: number;
  maxRetryDelayMs?: number;
  /** Unacked (and un-heartbeated) deliveries are redelivered after this; default 30 s. */
  ackWaitMs?: number;
  /** How long publish() keeps trying during an outage; default 30 s. */
  publishTimeoutMs?: number;
  /** Idle consumers look for redeliveries this often; default 1 s. */
  rescanMs?: number;
  /** How long the first connection may take; default 5 s. */
  connectTimeoutMs?: number;
}

type JetStreamModule = typeof import('@nats-io/jetstream');
type Handler = (d: Delivery) => Promise<void>;

const PRIORITIES = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0] as const;
const REQUEST_TIMEOUT_MS = 5000;
/** no_wait pulls are answered at once; waiting longer only stalls a consumer after a reconnect. */
const PULL_TIMEOUT_MS = 1000;
const REASON_HEADER = 'Sluice-Dead-Letter-Reason';
const DELIVERY_COUNT_HEADER = 'Sluice-Delivery-Count';
const nanos = (ms: number): number => Math.round(ms * 1_000_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


export class NatsQueue implements Queue {
  readonly jobsStream: string;
  readonly deadLetterStream: string;
  readonly deadLetterSubject: string;
  private readonly consumers = new Set<NatsConsumer>();
  private bell: Subscription | undefined;
  private closed = false;
  /** Publishes heard on <name>.jobs.*; consumers compare it before and after an empty scan. */
  rings = 0;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly mod: JetStreamModule,
    readonly opts: NatsQueueOptions,
  ) {
    const base = opts.name.replace(/[^A-Za-z0-9_-]/g, '_').toUpperCase();
    this.jobsStream = `${base}_JOBS`;
    this.deadLetterStream = `${base}_DLQ`;
    this.deadLetterSubject = `${opts.name}.dlq`;
  }

  static async connect(url: string, opts: NatsQueueOptions): Promise<NatsQueue> {
    const { connect } = await import('@nats-io/transport-node');
    const mod = await import('@nats-io/jetstream');
    let nc: NatsConnection;
    try {
      nc = await connect({ servers: url, name: 'sluice-queue', maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: opts.connectTimeoutMs ?? 5000 });
    } catch (e) { throw unreachable({ service: 'queue', field: 'QUEUE_URL', url }, e); }
    try {
      const jsm = await mod.jetstreamManager(nc);
      const queue = new NatsQueue(nc, mod.jetstream(nc), jsm, mod, opts);
      await queue.declare();
      queue.listenForPublishes();
      return queue;
    } catch (e) {
      await nc.close().catch(noop);
      throw unavailable('cannot declare the JetStream streams', e);
    }
  }

  subject(priority: number): string { return `${this.opts.name}.jobs.${priority}`; }
  consumerName(priority: number): string { return `${this.jobsStream.slice(0, -'_JOBS'.length)}_P${priority}`; }

  /** FIFO within a priority: fairness between users comes from the worker's deferral. */
  readonly fairDequeue = false;

  async publish(job: Job): Promise<void> {
    const priority = clampPriority(job.priority);
    const body = jobBody(job, priority);
    const msgID = `${job.requestId}:${randomUUID()}`;
    const deadline = Date.now() + (this.opts.publishTimeoutMs ?? 30_000);
    for (;;) {
      try {
        await this.js.publish(this.subject(priority), body, { msgID, timeout: REQUEST_TIMEOUT_MS });
        return;
      } catch (e) {
        if (this.closed || Date.now() + 250 >= deadline) throw unavailable('publish failed', e);
        await sleep(250);
      }
    }
  }

  async consume(handler: Handler, opts: ConsumeOptions): Promise<Consumer> {
    if (this.closed) throw unavailable('closed');
    const consumer = new NatsConsumer(this, handler, Math.max(1, Math.floor(opts.concurrency)));
    this.consumers.add(consumer);
    consumer.start();
    return consumer;
  }

  /** Jobs not yet delivered, over every priority (deliveries waiting for a retry delay are not counted). */
  async depth(): Promise<number> {
    try {
      const infos = await Promise.all(PRIORITIES.map((p) => this.jsm.consumers.info(this.jobsStream, this.consumerName(p))));
      return infos.reduce((sum, info) => sum + info.num_pending, 0);
    } catch (e) { throw unavailable('cannot read consumer state', e); }
  }

  /** Jobs in the dead-letter stream (for tests and operators). */
  async deadLetterDepth(): Promise<number> {
    try { return (await this.jsm.streams.info(this.deadLetterStream)).state.messages; } catch (e) { throw unavailable('cannot read the dead-letter stream', e); }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const c of [...this.consumers]) await c.close();
    await this.shutdown();
  }

  /** Drops the connection without settling in-flight deliveries, as a crash would: they return after ack_wait. */
  async closeAbruptly(): Promise<void> {
    if (this.closed) return;
    for (const c of [...this.consumers]) c.stop();
    await this.shutdown();
  }

  /** Removes both streams (and so the consumers); for tests. */
  async destroy(): Promise<void> {
    for (const stream of [this.jobsStream, this.deadLetterStream]) await this.jsm.streams.delete(stream).catch(noop);
  }

  // ---- used by consumers and deliveries ----

  forget(consumer: NatsConsumer): void { this.consumers.delete(consumer); }

  get rescanMs(): number { return this.opts.rescanMs ?? 1000; }

  backoff(deliveryCount: number): number {
    return exponentialBackoff(deliveryCount, this.opts.retryBaseMs, this.opts.maxRetryDelayMs);
  }

  /** Wakes idle consumers of this process after `ms` (a local retry delay ends). */
  wakeAfter(ms: number): void {
    setTimeout(() => { for (const c of this.consumers) c.wake(); }, ms + 5).unref();
  }

  /** One available message, from the highest priority that has one. */
  async pullHighest(): Promise<Msg | undefined> {
    for (const p of PRIORITIES) {
      const msg = await this.nc.request(
        `$JS.API.CONSUMER.MSG.NEXT.${this.jobsStream}.${this.consumerName(p)}`,
        JSON.stringify({ batch: 1, no_wait: true }),
        // A pulled message arrives under its own subject, not the inbox's, so the shared (muxed)
        // request inbox could not route it: use a dedicated one.
        { timeout: PULL_TIMEOUT_MS, noMux: true },
      );
      // A status (404 no messages, 408, 409) carries no job.
      if (msg.reply && !(msg.headers && msg.headers.code >= 300)) return msg;
    }
    return undefined;
  }

  /** Sends an ack-protocol token; `confirm` waits for the server's reply. */
  async settle(msg: Msg, token: string, confirm: boolean): Promise<void> {
    if (this.closed || !msg.reply) return;
    if (confirm) await this.nc.request(msg.reply, token, { timeout: REQUEST_TIMEOUT_MS });
    else msg.respond(token);
  }

  async publishDeadLetter(job: Job, reason: string, deliveryCount: number): Promise<void> {
    const h = (await import('@nats-io/transport-node')).headers();
    h.set(REASON_HEADER, reason.replace(/[\r\n]+/g, ' ').slice(0, 1000));
    h.set(DELIVERY_COUNT_HEADER, String(deliveryCount));
    try {
      await this.js.publish(this.deadLetterSubject, JSON.stringify(job), { headers: h, timeout: REQUEST_TIMEOUT_MS });
    } catch (e) { throw unavailable('cannot publish to the dead-letter stream', e); }
  }

  // ---- setup and teardown ----

  private async declare(): Promise<void> {
    const { RetentionPolicy, StorageType, AckPolicy, DeliverPolicy } = this.mod;
    await this.ensureStream({ name: this.jobsStream, subjects: [`${this.opts.name}.jobs.*`], retention: RetentionPolicy.Workqueue, storage: StorageType.File, duplicate_window: nanos(120_000) });
    await this.ensureStream({ name: this.deadLetterStream, subjects: [this.deadLetterSubject], retention: RetentionPolicy.Limits, storage: StorageType.File });
    const ackWait = nanos(this.opts.ackWaitMs ?? 30_000);
    for (const p of PRIORITIES) {
      const durable = this.consumerName(p);
      try {
        await this.jsm.consumers.add(this.jobsStream, {
          durable_name: durable, filter_subject: this.subject(p), ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All, ack_wait: ackWait, max_deliver: -1, max_ack_pending: 10_000,
        });
      } catch {
        // Exists with another ack_wait (configuration changed): adopt ours.
        await this.jsm.consumers.update(this.jobsStream, durable, { ack_wait: ackWait });
      }
    }
  }

  private async ensureStream(cfg: Parameters<JetStreamManager['streams']['add']>[0]): Promise<void> {
    try { await this.jsm.streams.info(cfg.name); } catch { await this.jsm.streams.add(cfg); }
  }

  private listenForPublishes(): void {
    this.bell = this.nc.subscribe(`${this.opts.name}.jobs.*`, {
      callback: () => { this.rings++; for (const c of this.consumers) c.wake(); },
    });
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    this.bell?.unsubscribe();
    await this.nc.flush().catch(noop);
    await this.nc.close().catch(noop);
  }
}

class NatsConsumer implements Consumer {
  private readonly inFlight = new Set<NatsDelivery>();
  private stopped = false;
  private paused = false;
  private wakeUp: (() => void) | undefined;
  private loop: Promise<void> = Promise.resolve();

  constructor(private readonly queue: NatsQueue, private readonly handler: Handler, private readonly concurrency: number) {}

  start(): void { this.loop = this.run(); }

  wake(): void { this.wakeUp?.(); }

  /** Stops pulling; in-flight deliveries are left to their ack_wait. */
  stop(): void {
    this.stopped = true;
    this.queue.forget(this);
    this.wake();
  }

  /** Stops pulling; the deliveries in flight stay settleable (the connection stays open). */
  async pause(): Promise<void> {
    this.paused = true;
    this.wake();
    await this.loop;
  }

  async close(): Promise<void> {
    if (this.stopped) return;
    this.stop();
    await this.loop;
    // Hand unsettled jobs back now rather than after ack_wait.
    const pending = [...this.inFlight];
    this.inFlight.clear();
    await Promise.all(pending.map((d) => d.abandon()));
  }

  release(d: NatsDelivery): void {
    if (this.inFlight.delete(d)) this.wake();
  }

  private async run(): Promise<void> {
    while (!this.stopped && !this.paused) {
      if (this.inFlight.size >= this.concurrency) { await this.idle(60_000); continue; }
      const rings = this.queue.rings;
      let msg: Msg | undefined;
      try { msg = await this.queue.pullHighest(); } catch {
        await this.idle(this.queue.rescanMs); // disconnected or server restarting: try again
        continue;
      }
      if (msg) {
        const delivery = NatsDelivery.from(this.queue, this, msg);
        if (this.stopped || this.paused) { await delivery.abandon(); return; }
        if (delivery.job.requestId === '') { void delivery.deadLetter('unreadable job').catch(noop); continue; }
        this.inFlight.add(delivery);
        void runHandler(this.handler, delivery);
        continue;
      }
      if (this.queue.rings === rings) await this.idle(this.queue.rescanMs);
    }
  }

  private idle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => { clearTimeout(timer); if (this.wakeUp === done) this.wakeUp = undefined; resolve(); };
      const timer = setTimeout(done, ms);
      this.wakeUp = done;
    });
  }
}

class NatsDelivery implements Delivery {
  settled = false;

  private constructor(
    private readonly queue: NatsQueue,
    private readonly consumer: NatsConsumer,
    private readonly msg: Msg,
    readonly job: Job,
    readonly deliveryCount: number,
  ) {}

  static from(queue: NatsQueue, consumer: NatsConsumer, msg: Msg): NatsDelivery {
    const priority = clampPriority(Number(msg.subject.slice(msg.subject.lastIndexOf('.') + 1)));
    return new NatsDelivery(queue, consumer, msg, parseJob(msg.data, priority), deliveredCount(msg.reply ?? ''));
  }

  async ack(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    // If the ack is lost the job is redelivered after ack_wait: a harmless duplicate.
    try { await this.queue.settle(this.msg, '+ACK', true); } catch { /* see above */ } finally { this.consumer.release(this); }
  }

  async retry(delayMs?: number): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    const delay = Math.max(0, Math.round(delayMs ?? this.queue.backoff(this.deliveryCount)));
    try { await this.queue.settle(this.msg, `-NAK ${JSON.stringify({ delay: nanos(delay) })}`, false); } finally { this.consumer.release(this); }
    this.queue.wakeAfter(delay);
  }

  async deadLetter(reason: string): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    // Copy first, then remove the original: a crash in between duplicates, never loses.
    try { await this.queue.publishDeadLetter(this.job, reason, this.deliveryCount); } catch (e) { this.settled = false; throw e; }
    try { await this.queue.settle(this.msg, '+ACK', true); } catch { /* redelivered after ack_wait; the worker sees it is finished */ } finally { this.consumer.release(this); }
  }

  async heartbeat(): Promise<void> {
    if (!this.settled) await this.queue.settle(this.msg, '+WPI', false);
  }

  /** Returns the job for immediate redelivery (its consumer closed). */
  async abandon(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    await this.queue.settle(this.msg, '-NAK', false).catch(noop);
  }
}

function parseJob(data: Uint8Array, subjectPriority: number): Job {
  try {
    const v = JSON.parse(new TextDecoder().decode(data)) as Record<string, unknown>;
    if (typeof v.requestId === 'string') return { requestId: v.requestId, priority: subjectPriority, ...optionalJobFields(v) };
  } catch { /* fall through */ }
  return { requestId: '', priority: subjectPriority };
}

/**
 * The delivery count is the third token after the consumer name in the ack subject:
 * $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (9 tokens), or with
 * domain and account hash first (12 tokens, newer servers).
 */
function deliveredCount(reply: string): number {
  const tokens = reply.split('.');
  const n = Number(tokens[tokens.length === 9 ? 4 : 6]);
  return Number.isInteger(n) && n > 0 ? n : 1;
}

// RabbitMQ queue (amqplib, RabbitMQ 3.10+).
//
// Topology, declared on every (re)connect:
//   <name>             durable classic queue, x-max-priority 9: the work queue
//   <name>.wait.<ms>   durable, x-message-ttl <ms>, dead-letters back to <name>: retry backoff.
//                      One queue per delay, because a per-message TTL only expires at the head of a
//                      queue and a long delay would hold up a short one. x-expires removes unused ones.
//   <name>.dlq         durable: jobs given up on, with an x-dead-letter-reason header
// Messages are persistent and published on a confirm channel; publish() resolves on the confirm.
// Attempts travel in the x-delivery-count header (classic queues do not count deliveries; only
// the `redelivered` flag says a delivery was returned after a consumer died, so a job redelivered
// twice in a row by crashes counts one extra delivery, not two).
// heartbeat() is a no-op: RabbitMQ has no ack deadline except its global consumer_timeout
// (30 min by default since 3.8.15); raise it in rabbitmq.conf above the longest generation.
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import type { ConsumeOptions, Consumer, Delivery, Job, Queue } from '../../ports/queue.ts';
import { exponentialBackoff } from '../../core/backoff.ts';
import { unreachable, withConnectTimeout } from '../endpoint.ts';
import { clampPriority, jobBody, noop, runHandler, unavailable, optionalJobFields } from './common.ts';

export interface AmqpQueueOptions {
  name: string;
  retryBaseMs: number;
  maxRetryDelayMs?: number;
  /** How long publish() waits for the broker during an outage before failing; default 30 s. */
  publishTimeoutMs?: number;
  /** First and largest pause between reconnect attempts; default 100 ms and 5 s. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Shown by the broker (management UI, rabbitmqctl list_connections); default 'sluice'. */
  connectionName?: string;
  /** How long the first connection (socket, AMQP handshake, declarations) may take; default 5 s. */
  connectTimeoutMs?: number;
}

type ConnectFn = (url: string) => Promise<ChannelModel>;
type Handler = (d: Delivery) => Promise<void>;

const DELIVERY_COUNT_HEADER = 'x-delivery-count';
const REASON_HEADER = 'x-dead-letter-reason';

interface Link { conn: ChannelModel; pub: ConfirmChannel }

export class AmqpQueue implements Queue {
  private link: Link | undefined;
  private readonly consumers = new Set<AmqpConsumer>();
  private readonly linkWaiters = new Set<() => void>();
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectAttempt = 0;
  private closed = false;

  private constructor(private readonly url: string, readonly opts: AmqpQueueOptions, private readonly connectFn: ConnectFn) {}

  /** Connects and declares the topology; fails with SLUICE_ERR_UNAVAILABLE if the broker is unreachable. */
  static async connect(url: string, opts: AmqpQueueOptions): Promise<AmqpQueue> {
    const amqp = await import('amqplib');
    const clientProperties = { connection_name: opts.connectionName ?? 'sluice' };
    const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
    const queue = new AmqpQueue(withHeartbeat(url), opts, (u) => amqp.connect(u, { clientProperties, timeout: connectTimeoutMs }));
    // A broker that accepts the socket but never finishes the handshake would hold the start
    // forever: the deadline closes the queue, and establish() drops a connection that arrives late.
    try {
      await withConnectTimeout(connectTimeoutMs, queue.establish(), () => void queue.close());
    } catch (e) {
      throw unreachable({ service: 'queue', field: 'QUEUE_URL', url }, e);
    }
    return queue;
  }

  get name(): string { return this.opts.name; }
  get deadLetterQueue(): string { return `${this.opts.name}.dlq`; }
  waitQueue(delayMs: number): string { return `${this.opts.name}.wait.${delayMs}`; }

  /** FIFO within a priority: fairness between users comes from the worker's deferral. */
  readonly fairDequeue = false;

  async publish(job: Job): Promise<void> {
    const priority = clampPriority(job.priority);
    await this.confirmPublish(this.name, { ...job, priority }, { priority, headers: { [DELIVERY_COUNT_HEADER]: 0 } });
  }

  async consume(handler: Handler, opts: ConsumeOptions): Promise<Consumer> {
    if (this.closed) throw unavailable('closed');
    const consumer = new AmqpConsumer(this, handler, Math.max(1, Math.floor(opts.concurrency)));
    this.consumers.add(consumer);
    // While disconnected the consumer is registered only; the reconnect starts it.
    const link = this.link;
    if (link) await consumer.start(link.conn).catch(noop);
    return consumer;
  }

  async depth(): Promise<number> { return this.messageCount(this.name); }

  /** Jobs in `<name>.dlq` (for tests and operators). */
  async deadLetterDepth(): Promise<number> { return this.messageCount(this.deadLetterQueue); }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    for (const wake of this.linkWaiters) wake();
    this.consumers.clear();
    const link = this.link;
    this.link = undefined;
    // Closing the connection returns every unacked delivery to the queue.
    if (link) await link.conn.close().catch(noop);
  }

  // ---- used by consumers and deliveries ----

  forget(consumer: AmqpConsumer): void { this.consumers.delete(consumer); }

  /** Parks the job in the wait queue for `delayMs`; it returns to the work queue with one more delivery counted. */
  async publishToWait(job: Job, delayMs: number, deliveryCount: number): Promise<void> {
    const delay = Math.max(1, Math.round(delayMs));
    const waitQueue = this.waitQueue(delay);
    await this.confirmPublish(waitQueue, job, { priority: job.priority, headers: { [DELIVERY_COUNT_HEADER]: deliveryCount } }, (pub) =>
      pub.assertQueue(waitQueue, {
        durable: true,
        arguments: { 'x-message-ttl': delay, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': this.name, 'x-expires': delay * 2 + 60_000 },
      }).then(noop));
  }

  async publishToDeadLetter(job: Job, reason: string, deliveryCount: number): Promise<void> {
    await this.confirmPublish(this.deadLetterQueue, job, { priority: job.priority, headers: { [DELIVERY_COUNT_HEADER]: deliveryCount, [REASON_HEADER]: reason } });
  }

  backoff(deliveryCount: number): number {
    return exponentialBackoff(deliveryCount, this.opts.retryBaseMs, this.opts.maxRetryDelayMs);
  }

  // ---- connection lifecycle ----

  private async establish(): Promise<void> {
    const conn = await this.connectFn(this.url);
    conn.on('error', noop); // a 'close' always follows; that is where recovery starts
    conn.on('close', () => this.lost(conn));
    try {
      const pub = await conn.createConfirmChannel();
      pub.on('error', noop);
      // A channel-level error (e.g. an inequivalent declare) kills the publish channel; start over.
      pub.on('close', () => { if (this.link?.pub === pub) void conn.close().catch(noop); });
      await pub.assertQueue(this.name, { durable: true, maxPriority: 9 });
      await pub.assertQueue(this.deadLetterQueue, { durable: true });
      if (this.closed) { await conn.close().catch(noop); return; }
      this.link = { conn, pub };
      for (const c of this.consumers) await c.start(conn);
      this.reconnectAttempt = 0;
      for (const wake of this.linkWaiters) wake();
    } catch (e) {
      if (this.link?.conn === conn) this.link = undefined;
      await conn.close().catch(noop);
      throw e;
    }
  }

  private lost(conn: ChannelModel): void {
    if (this.link?.conn !== conn) return;
    this.link = undefined;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const min = this.opts.reconnectMinMs ?? 100;
    const max = this.opts.reconnectMaxMs ?? 5000;
    const delay = exponentialBackoff(++this.reconnectAttempt, min, max) * (0.8 + Math.random() * 0.4);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.closed) return;
      this.establish().catch(() => this.scheduleReconnect());
    }, delay);
    this.reconnectTimer.unref();
  }

  /** The current link, waiting for a reconnect until `deadline`. */
  private async ready(deadline: number): Promise<Link> {
    while (!this.link) {
      if (this.closed) throw unavailable('closed');
      const left = deadline - Date.now();
      if (left <= 0) throw unavailable('broker unreachable');
      await new Promise<void>((resolve) => {
        const done = (): void => { clearTimeout(timer); this.linkWaiters.delete(done); resolve(); };
        const timer = setTimeout(done, left);
        this.linkWaiters.add(done);
      });
    }
    return this.link;
  }

  /**
   * Publishes persistently and resolves on the broker's confirm. If the link drops before the
   * confirm, the message may or may not be stored, so it is published again on the next link:
   * a duplicate job is harmless, a lost one is not.
   */
  private async confirmPublish(queue: string, job: Job, options: Options.Publish, prepare?: (pub: ConfirmChannel) => Promise<void>): Promise<void> {
    const body = Buffer.from(jobBody(job, job.priority));
    const deadline = Date.now() + (this.opts.publishTimeoutMs ?? 30_000);
    let lastError: unknown;
    for (;;) {
      const link = await this.ready(deadline).catch((e: unknown) => { throw lastError ? unavailable('publish failed', lastError) : e; });
      try {
        if (prepare) await prepare(link.pub);
        await new Promise<void>((resolve, reject) => {
          link.pub.sendToQueue(queue, body, { ...options, persistent: true, contentType: 'application/json' }, (err: unknown) => (err ? reject(err) : resolve()));
        });
        return;
      } catch (e) {
        lastError = e;
        if (this.closed || Date.now() >= deadline) throw unavailable('publish failed', e);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private async messageCount(queue: string): Promise<number> {
    const link = await this.ready(Date.now() + (this.opts.publishTimeoutMs ?? 30_000));
    try { return (await link.pub.checkQueue(queue)).messageCount; } catch (e) { throw unavailable(`cannot inspect ${queue}`, e); }
  }
}

class AmqpConsumer implements Consumer {
  /** The channel deliveries arrive on; undefined while disconnected or after close. */
  channel: Channel | undefined;
  private closed = false;
  private paused = false;
  private startedOn: ChannelModel | undefined;
  private consumerTag: string | undefined;

  constructor(private readonly queue: AmqpQueue, private readonly handler: Handler, private readonly concurrency: number) {}

  async start(conn: ChannelModel): Promise<void> {
    // consume() and a reconnect may both start this consumer on the same connection.
    if (this.closed || this.paused || this.startedOn === conn) return;
    this.startedOn = conn;
    const ch = await conn.createChannel();
    ch.on('error', noop);
    ch.on('close', () => { if (this.channel === ch) this.channel = undefined; });
    await ch.prefetch(this.concurrency);
    this.channel = ch;
    this.consumerTag = (await ch.consume(this.queue.name, (msg) => { if (msg) this.receive(ch, msg); }, { noAck: false })).consumerTag;
  }

  /** basic.cancel: the broker sends nothing more, and the unacked deliveries stay settleable on the channel. */
  async pause(): Promise<void> {
    if (this.paused || this.closed) return;
    this.paused = true;
    const [ch, tag] = [this.channel, this.consumerTag];
    if (ch && tag) await ch.cancel(tag).catch(noop);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queue.forget(this);
    const ch = this.channel;
    this.channel = undefined;
    // Closing the channel returns its unacked deliveries to the queue (flagged redelivered).
    if (ch) await ch.close().catch(noop);
  }

  private receive(ch: Channel, msg: ConsumeMessage): void {
    const job = parseJob(msg.content);
    if (!job) {
      // Not ours and unreadable: retrying cannot help, so park it where operators look.
      void this.queue.publishToDeadLetter({ requestId: msg.content.toString('utf8').slice(0, 200), priority: 0 }, 'unreadable job', 1)
        .then(() => ch.ack(msg), noop);
      return;
    }
    const header = Number(msg.properties.headers?.[DELIVERY_COUNT_HEADER] ?? 0);
    const previous = Number.isFinite(header) && header > 0 ? Math.floor(header) : 0;
    const delivery = new AmqpDelivery(this, ch, msg, job, previous + 1 + (msg.fields.redelivered ? 1 : 0), this.queue);
    void runHandler(this.handler, delivery);
  }
}

class AmqpDelivery implements Delivery {
  settled = false;

  constructor(
    private readonly consumer: AmqpConsumer,
    private readonly ch: Channel,
    private readonly msg: ConsumeMessage,
    readonly job: Job,
    readonly deliveryCount: number,
    private readonly queue: AmqpQueue,
  ) {}

  /** False once settled, or once the channel died (the broker has already requeued the message). */
  private get live(): boolean { return !this.settled && this.consumer.channel === this.ch; }

  async ack(): Promise<void> {
    if (!this.live) return;
    this.settled = true;
    this.ackOriginal();
  }

  async retry(delayMs?: number): Promise<void> {
    await this.moveOut(() => this.queue.publishToWait(this.job, delayMs ?? this.queue.backoff(this.deliveryCount), this.deliveryCount));
  }

  async deadLetter(reason: string): Promise<void> {
    await this.moveOut(() => this.queue.publishToDeadLetter(this.job, reason, this.deliveryCount));
  }

  async heartbeat(): Promise<void> { /* see the header: no ack deadline to extend */ }

  /** Publish the copy first (confirmed), then ack the original: a crash in between duplicates, never loses. */
  private async moveOut(publishCopy: () => Promise<void>): Promise<void> {
    if (!this.live) return;
    this.settled = true;
    try { await publishCopy(); } catch (e) { this.settled = false; throw e; }
    this.ackOriginal();
  }

  private ackOriginal(): void {
    try { this.ch.ack(this.msg); } catch { /* channel closed: the broker redelivers; jobs are idempotent */ }
  }
}

function parseJob(content: Buffer): Job | undefined {
  try {
    const v: unknown = JSON.parse(content.toString('utf8'));
    if (typeof v !== 'object' || v === null) return undefined;
    const { requestId, priority } = v as Record<string, unknown>;
    if (typeof requestId !== 'string' || requestId === '') return undefined;
    return { requestId, priority: clampPriority(typeof priority === 'number' ? priority : 0), ...optionalJobFields(v as Record<string, unknown>) };
  } catch { return undefined; }
}

/** Dead peers are noticed within ~20 s unless the URL already chose a heartbeat. */
function withHeartbeat(url: string): string {
  const u = new URL(url);
  if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', '10');
  return u.toString();
}

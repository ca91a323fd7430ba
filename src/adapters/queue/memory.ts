// In-process queue for the embedded mode and tests. Same semantics as the brokers: asynchronous
// delivery, higher priority first, at most `concurrency` unsettled deliveries per consumer,
// unsettled work returned to the queue when its consumer closes. Within a priority it is fairer
// than the brokers: round-robin over users, FIFO per user (so FIFO for jobs of one user).
// Nothing survives the process: the embedded mode re-enqueues unfinished requests from the store.
import type { ConsumeOptions, Consumer, Delivery, Job, Queue } from '../../ports/queue.ts';
import { exponentialBackoff } from '../../core/backoff.ts';
import { SluiceError } from '../../core/errors.ts';
import { clampPriority, MAX_PRIORITY, runHandler } from './common.ts';

interface Entry { job: Job; deliveryCount: number }

/** A FIFO with O(1) push and shift (Array#shift copies the rest of a long array on every call). */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get size(): number { return this.items.length - this.head; }

  push(item: T): void { this.items.push(item); }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head++];
    // Drop the consumed prefix now and then, so memory follows the backlog.
    if (this.head >= 1024 && this.head * 2 >= this.items.length) { this.items = this.items.slice(this.head); this.head = 0; }
    return item;
  }
}

/**
 * One priority's waiting jobs: a FIFO per user and a ring of the users with jobs waiting. Each
 * shift serves the user at the head of the ring, who goes to its back if more jobs wait: a user
 * with 96 jobs queued delays another user's job by at most one of its own.
 */
class FairLevel {
  private readonly byUser = new Map<string, Fifo<Entry>>();
  private readonly ring = new Fifo<string>();
  size = 0;

  push(entry: Entry): void {
    // Jobs without a user (published before jobs had one) share one turn.
    const user = entry.job.userId ?? '';
    let mine = this.byUser.get(user);
    if (!mine) { mine = new Fifo<Entry>(); this.byUser.set(user, mine); this.ring.push(user); }
    mine.push(entry);
    this.size++;
  }

  shift(): Entry | undefined {
    const user = this.ring.shift();
    if (user === undefined) return undefined;
    const mine = this.byUser.get(user)!;
    const entry = mine.shift();
    if (mine.size > 0) this.ring.push(user); else this.byUser.delete(user);
    this.size--;
    return entry;
  }
}

/** Waiting jobs: one fair level per priority (see clampPriority), highest first. */
class PriorityFifo {
  private readonly levels = Array.from({ length: MAX_PRIORITY + 1 }, () => new FairLevel());
  private count = 0;

  get size(): number { return this.count; }

  push(priority: number, item: Entry): void { this.levels[priority]!.push(item); this.count++; }

  shift(): Entry | undefined {
    for (let p = this.levels.length - 1; p >= 0; p--) {
      const level = this.levels[p]!;
      if (level.size > 0) { this.count--; return level.shift(); }
    }
    return undefined;
  }
}

export interface MemoryQueueOptions {
  retryBaseMs: number;
  maxRetryDelayMs?: number;
}

type Handler = (d: Delivery) => Promise<void>;

class MemoryConsumer implements Consumer {
  readonly inFlight = new Set<MemoryDelivery>();
  closed = false;
  paused = false;
  constructor(readonly queue: MemoryQueue, readonly handler: Handler, readonly concurrency: number) {}

  get hasRoom(): boolean { return !this.closed && !this.paused && this.inFlight.size < this.concurrency; }

  async pause(): Promise<void> { this.paused = true; }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queue.detach(this);
    // Unsettled jobs go back for another consumer; their late settle calls become no-ops.
    for (const d of this.inFlight) {
      d.settled = true;
      this.queue.enqueue({ job: d.job, deliveryCount: d.deliveryCount + 1 });
    }
    this.inFlight.clear();
  }
}

class MemoryDelivery implements Delivery {
  settled = false;
  constructor(readonly job: Job, readonly deliveryCount: number, private readonly consumer: MemoryConsumer) {}

  /** Marks the delivery settled exactly once; false when it already was (or its consumer closed). */
  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.consumer.inFlight.delete(this);
    this.consumer.queue.pump();
    return true;
  }

  async ack(): Promise<void> { this.settle(); }

  async retry(delayMs?: number): Promise<void> {
    if (!this.settle()) return;
    const queue = this.consumer.queue;
    const delay = delayMs ?? queue.backoff(this.deliveryCount);
    queue.later(delay, { job: this.job, deliveryCount: this.deliveryCount + 1 });
  }

  async deadLetter(reason: string): Promise<void> {
    if (!this.settle()) return;
    this.consumer.queue.bury(this.job, reason, this.deliveryCount);
  }

  async heartbeat(): Promise<void> { /* no ack deadline in memory */ }
}

export interface DeadLetter { job: Job; reason: string; deliveryCount: number; at: number }

export class MemoryQueue implements Queue {
  readonly fairDequeue = true;
  private readonly waiting = new PriorityFifo();
  private readonly consumers: MemoryConsumer[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly dead: DeadLetter[] = [];
  private nextConsumer = 0;
  private pumpScheduled = false;
  private closed = false;

  constructor(private readonly opts: MemoryQueueOptions) {}

  async publish(job: Job): Promise<void> {
    if (this.closed) throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'queue is closed');
    const userId = job.userId !== undefined && job.userId !== '' ? { userId: job.userId } : {};
    const model = job.model !== undefined && job.model !== '' ? { model: job.model } : {};
    this.enqueue({ job: { requestId: job.requestId, priority: clampPriority(job.priority), ...userId, ...model }, deliveryCount: 1 });
  }

  async consume(handler: Handler, opts: ConsumeOptions): Promise<Consumer> {
    if (this.closed) throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'queue is closed');
    const consumer = new MemoryConsumer(this, handler, Math.max(1, Math.floor(opts.concurrency)));
    this.consumers.push(consumer);
    this.pump();
    return consumer;
  }

  async depth(): Promise<number> { return this.waiting.size; }

  /** Jobs given up on, oldest first (for tests and operators). */
  deadLettered(): Job[] { return this.dead.map((d) => d.job); }

  /** Dead letters with their reasons. */
  deadLetters(): readonly DeadLetter[] { return this.dead; }

  async deadLetterDepth(): Promise<number> { return this.dead.length; }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const c of [...this.consumers]) await c.close();
  }

  // ---- internals shared with consumers and deliveries ----

  backoff(deliveryCount: number): number {
    return exponentialBackoff(deliveryCount, this.opts.retryBaseMs, this.opts.maxRetryDelayMs);
  }

  enqueue(entry: Entry): void {
    if (this.closed) return;
    this.waiting.push(entry.job.priority, entry);
    this.pump();
  }

  later(delayMs: number, entry: Entry): void {
    const timer = setTimeout(() => { this.timers.delete(timer); this.enqueue(entry); }, Math.max(0, delayMs));
    timer.unref();
    this.timers.add(timer);
  }

  bury(job: Job, reason: string, deliveryCount: number): void {
    this.dead.push({ job, reason, deliveryCount, at: Date.now() });
  }

  detach(consumer: MemoryConsumer): void {
    const i = this.consumers.indexOf(consumer);
    if (i >= 0) this.consumers.splice(i, 1);
  }

  /** Schedules delivery on a later turn, so handlers never run re-entrantly inside publish/ack. */
  pump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => { this.pumpScheduled = false; this.deliver(); });
  }

  private deliver(): void {
    while (this.waiting.size > 0) {
      const consumer = this.pickConsumer();
      if (!consumer) return;
      const entry = this.waiting.shift()!;
      const delivery = new MemoryDelivery(entry.job, entry.deliveryCount, consumer);
      consumer.inFlight.add(delivery);
      void runHandler(consumer.handler, delivery);
    }
  }

  /** Round-robin among consumers with a free slot, so work spreads across them. */
  private pickConsumer(): MemoryConsumer | undefined {
    for (let n = 0; n < this.consumers.length; n++) {
      const c = this.consumers[(this.nextConsumer + n) % this.consumers.length]!;
      if (c.hasRoom) { this.nextConsumer = (this.nextConsumer + n + 1) % this.consumers.length; return c; }
    }
    return undefined;
  }
}

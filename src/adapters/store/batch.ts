// Statement batching: calls of one hot statement (insert, claim, finish) made in the same
// event-loop turn, or while an earlier batch of it is running, are run together as one multi-row
// statement. A statement costs far more than a row on either engine (PGlite: ~160 µs of parse,
// executor start and protocol per statement against ~60 µs per row; PostgreSQL: a round trip and
// a commit each), so under load this turns N statements into one. Nobody waits for a timer: an
// idle batcher runs its calls at the end of the turn they were made in.
//
// Each row is still its own atomic change: the multi-row statements are written so that every
// row succeeds or fails on its own conditions. If a whole batch fails (one bad row), every call
// in it is run again on its own, so only the bad one reports the error.
//
// On shutdown (close) the calls already made still run, so a caller waiting for its row gets its
// own answer; calls made after it fail at once, without reaching the database.

interface Pending<I, O> { item: I; resolve: (o: O) => void; reject: (e: unknown) => void }

export interface BatchOptions<I, O> {
  /** Runs items as one statement (also a batch of one); returns one result per item, in order. */
  many(items: readonly I[]): Promise<O[]>;
  /** Items with the same key never share a batch (a multi-row UPDATE touches a row once). */
  key(item: I): string;
  /** Batches of this statement running at once (1 for a single-connection engine). */
  inFlight: number;
  /** Largest batch. */
  maxSize?: number;
  /** Whether a failed batch is run again call by call. A failure that may have left the batch
   *  committed (a connection lost after COMMIT) must not be: a second run would see its own rows. */
  retryAlone(e: unknown): boolean;
}

export class Batcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private running = 0;
  private scheduled = false;
  private readonly maxSize: number;
  /** Set by close(): what a later call fails with. */
  private closedWith: (() => unknown) | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: BatchOptions<I, O>) {
    this.maxSize = opts.maxSize ?? 256;
  }

  run(item: I): Promise<O> {
    if (this.closedWith) return Promise.reject(this.closedWith());
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Calls made and not yet answered (queued or in a running batch). */
  get pending(): number { return this.queue.length + this.inBatches; }
  private inBatches = 0;

  /**
   * Refuses new calls (they fail with `error()`) and resolves once every call already made has
   * its answer: the queued ones still run, in batches as usual.
   */
  close(error: () => unknown): Promise<void> {
    this.closedWith ??= error;
    if (this.pending === 0) return Promise.resolve();
    return new Promise<void>((resolve) => { this.idleWaiters.push(resolve); });
  }

  private settleIdle(): void {
    if (this.pending > 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Runs the queue at the end of this event-loop turn, so that calls made by the other requests
   *  handled in the same turn join the batch. (PGlite runs a statement synchronously: without
   *  this, a batch would always be done before the next request's call is made.) */
  private schedule(): void {
    if (this.scheduled || this.running >= this.opts.inFlight) return;
    this.scheduled = true;
    setImmediate(() => { this.scheduled = false; this.pump(); });
  }

  private pump(): void {
    while (this.running < this.opts.inFlight && this.queue.length > 0) {
      const batch = this.take();
      this.running++;
      this.inBatches += batch.length;
      void this.execute(batch).finally(() => { this.running--; this.inBatches -= batch.length; this.schedule(); this.settleIdle(); });
    }
  }

  /** The oldest calls, up to maxSize, skipping a call whose key is already in the batch. */
  private take(): Pending<I, O>[] {
    if (this.queue.length === 1) return this.queue.splice(0, 1);
    const batch: Pending<I, O>[] = [];
    const rest: Pending<I, O>[] = [];
    const keys = new Set<string>();
    for (const p of this.queue) {
      const k = this.opts.key(p.item);
      if (batch.length >= this.maxSize || keys.has(k)) { rest.push(p); continue; }
      keys.add(k);
      batch.push(p);
    }
    this.queue = rest;
    return batch;
  }

  private async execute(batch: Pending<I, O>[]): Promise<void> {
    let results: O[];
    try {
      results = await this.opts.many(batch.map((p) => p.item));
      if (results.length !== batch.length) throw new Error(`batch of ${batch.length} gave ${results.length} results`);
    } catch (e) {
      if (batch.length === 1 || !this.opts.retryAlone(e)) { for (const p of batch) p.reject(e); return; }
      for (const p of batch) await this.alone(p);
      return;
    }
    batch.forEach((p, i) => p.resolve(results[i] as O));
  }

  private async alone(p: Pending<I, O>): Promise<void> {
    try {
      const [result] = await this.opts.many([p.item]);
      p.resolve(result as O);
    } catch (e) {
      p.reject(e);
    }
  }
}

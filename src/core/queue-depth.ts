// The queue depth that admission compares with queueMaxDepth: requests accepted and waiting for a
// worker. It is the store's count of queued requests (a cancelled request is not queued, and a
// job published twice is one row), sampled every sampleMs so that admission pays no round trip,
// plus the requests this process admitted since the sample was taken. Check and count happen in
// one synchronous step, so one gateway never admits past the bound, however fast a burst comes.
//
// With N gateways, each one sees the others' admissions only at its next sample: between two
// samples the others may admit what they see room for, so the queue can exceed the bound by what
// the other gateways admitted in one sample interval, never by more than (N-1) x queueMaxDepth.
// (docs/operations.md, "Queue depth".)

/** A place in the queue held by one admission: stored once its request row exists, released if it never will. */
export interface QueueSlot {
  /** The request's row is committed: the next sample that starts from now on counts it. */
  stored(): void;
  /** The request was refused or not stored after all: the place is given back. */
  release(): void;
}

const PENDING = Number.POSITIVE_INFINITY;

export class QueueDepth {
  private sampled = 0;
  /** Incremented as each sample starts; a slot stored before a sample started is in its count. */
  private epoch = 0;
  /** This process's admissions no sample has counted yet: slot -> epoch its row was stored in (PENDING until stored). */
  private readonly unseen = new Map<QueueSlot, number>();
  private sampling: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;

  /** `count` reads the queued requests from the store; `onSample` sees each new depth (the gauge). */
  constructor(private readonly count: () => Promise<number>, private readonly onSample: (depth: number) => void = () => {}) {}

  /** The last sample plus this process's admissions it has not counted. */
  depth(): number { return this.sampled + this.unseen.size; }

  /** Counts one more queued request now; the caller has checked depth() in the same synchronous step. */
  take(): QueueSlot {
    const slot: QueueSlot = {
      stored: () => { if (this.unseen.has(slot)) this.unseen.set(slot, this.epoch); },
      release: () => { this.unseen.delete(slot); },
    };
    this.unseen.set(slot, PENDING);
    return slot;
  }

  /**
   * Reads the count again. A row committed before the count's statement started is in it; so a
   * slot stored before this sample's epoch began is dropped once the count arrives. A slot stored
   * while the count ran may be counted twice until the next sample: an over-estimate, never under.
   * Failures keep the last sample (and the slots), so the depth errs high while the store is out.
   */
  sample(): Promise<void> {
    this.sampling ??= (async () => {
      const started = ++this.epoch;
      try {
        const n = await this.count();
        this.sampled = n;
        for (const [slot, at] of this.unseen) if (at < started) this.unseen.delete(slot);
        this.onSample(this.depth());
      } catch { /* keep the last sample */ } finally { this.sampling = null; }
    })();
    return this.sampling;
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.sample(), intervalMs);
    this.timer.unref();
  }

  stop(): void { if (this.timer) clearInterval(this.timer); this.timer = null; }
}

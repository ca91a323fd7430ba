// Queue port: at-least-once jobs with explicit ack, redelivery of unacked work, retry with
// backoff, dead-letter and priority. A job only names a request: the store holds the request
// itself, so a job published twice is harmless (workers claim the request by id).

export interface Job {
  requestId: string;
  /** 0 (lowest) … 9 (highest); tiers map to priorities. */
  priority: number;
  /** Whose request: the unit of fair sharing. Absent on jobs published before it existed. */
  userId?: string;
  /**
   * The model the request names: a worker defers a job whose model has no free capacity rather
   * than hold a slot waiting for it. Absent on jobs published before it existed (they just run).
   */
  model?: string;
}

export interface Delivery {
  readonly job: Job;
  /** 1 on first delivery; grows with every redelivery or retry. */
  readonly deliveryCount: number;
  /** Done: never deliver again. */
  ack(): Promise<void>;
  /** Deliver again after `delayMs` (the queue's backoff if omitted). */
  retry(delayMs?: number): Promise<void>;
  /** Give up: move to the dead-letter destination, never deliver again. */
  deadLetter(reason: string): Promise<void>;
  /** Still working: extends the ack deadline of long generations. */
  heartbeat(): Promise<void>;
}

export interface ConsumeOptions {
  /** Jobs in flight at once in this consumer (prefetch). */
  concurrency: number;
}

export interface Consumer {
  /** Stops taking new jobs; the deliveries in flight go on and are settled as usual (draining). */
  pause(): Promise<void>;
  /** Stops taking jobs; jobs in flight and not acked are redelivered to another consumer. */
  close(): Promise<void>;
}

export interface Queue {
  /**
   * True if, within a priority, jobs are dequeued round-robin over users (FIFO per user), so one
   * user's backlog cannot hold back another user's job. False for brokers that are FIFO within a
   * priority: there the worker's deferral provides the fairness (see core/worker.ts).
   */
  readonly fairDequeue: boolean;
  /** Durably enqueues the job; resolves once the broker confirmed it. */
  publish(job: Job): Promise<void>;
  consume(handler: (d: Delivery) => Promise<void>, opts: ConsumeOptions): Promise<Consumer>;
  /** Jobs waiting (not in flight), for backpressure and metrics. */
  depth(): Promise<number>;
  close(): Promise<void>;
}

// Bus port: a per-request, append-only event log with one atomic sequence, live fan-out and replay.
//
// Sequence numbers start at 1 for each request and increase by exactly 1 per appended event,
// across attempts (a retried request appends `restart` and continues the same sequence), so a
// listener's Last-Event-ID is one number that identifies a position in the log.

import type { FinishReason } from './model.ts';

export interface Usage { promptTokens: number; completionTokens: number; totalTokens: number }

export type EventBody =
  | { type: 'token'; attempt: number; text: string }
  | { type: 'restart'; attempt: number; reason: string }
  | { type: 'completed'; attempt: number; finishReason: FinishReason; usage: Usage }
  | { type: 'error'; attempt: number; status: 'failed' | 'cancelled'; code: string; message: string; usage: Usage };

/** An event as stored in the log: body plus its sequence and the append time (ms since epoch). */
export type LogEvent = EventBody & { seq: number; ts: number };

export const isTerminal = (e: EventBody): boolean => e.type === 'completed' || e.type === 'error';

/**
 * appendMany failed after logging the first events of the burst (an adapter that cannot append a
 * burst atomically). Those events are in the log and may have reached listeners, so the caller
 * counts them (a token logged is a token billed); `cause` is the failure itself.
 */
export class PartialAppendError extends Error {
  override readonly name = 'PartialAppendError';
  constructor(readonly appended: readonly LogEvent[], options: { cause: unknown }) {
    super(`appended ${appended.length} events of a burst, then failed`, options);
  }
}

export type ControlSignal = 'cancel';

export interface Subscription { close(): Promise<void> }

export interface Bus {
  /** Atomically assigns the next sequence number, appends, refreshes the log's TTL and publishes live. */
  append(requestId: string, event: EventBody): Promise<LogEvent>;
  /**
   * Appends several events in order, as `append` would one after another, in one operation (one
   * round trip where the backend allows): a burst of tokens costs one append, not one each.
   * Returns the logged events in the same order; an empty list appends nothing. An adapter that
   * cannot append a burst atomically throws PartialAppendError when it fails part-way.
   */
  appendMany(requestId: string, events: readonly EventBody[]): Promise<LogEvent[]>;
  /** Events with seq > afterSeq, in order (at most `limit`). Empty if the log expired or never existed. */
  read(requestId: string, afterSeq: number, limit?: number): Promise<LogEvent[]>;
  /** Live events appended after the subscription is active. Delivery may duplicate or skip; callers merge by seq. */
  subscribe(requestId: string, onEvent: (e: LogEvent) => void): Promise<Subscription>;
  /** Out-of-band signal to whoever runs the request (a cancel); not part of the log, not replayed. */
  publishControl(requestId: string, signal: ControlSignal): Promise<void>;
  onControl(requestId: string, onSignal: (signal: ControlSignal) => void): Promise<Subscription>;
  close(): Promise<void>;
}

// Bus port: a per-request, append-only event log with one atomic sequence, live fan-out and replay.
//
// Sequence numbers start at 1 for each request and increase by exactly 1 per appended event,
// across attempts (a retried request appends `restart` and continues the same sequence), so a
// listener's Last-Event-ID is one number that identifies a position in the log.
//
// A log ends with exactly one terminal event (completed or error), and nothing follows it. Every
// adapter enforces this atomically with the sequence, so two appenders racing to end a request
// (the attempt that settled it, and a resume or a worker repairing a log that lacks its terminal
// event) leave one terminal event in the log and both learn which one:
// - a terminal event appended to a log that already ended is not appended; the append returns
//   the log's terminal event instead (compare its seq, or just deliver it: it is the end);
// - any other event appended to a log that already ended is refused with LogEndedError, which
//   carries the log's terminal event;
// - in a burst, a terminal event may only come last.

import type { FinishReason } from './model.ts';

export interface Usage { promptTokens: number; completionTokens: number; totalTokens: number }

export type EventBody =
  /** `choice` only when not 0 (n > 1); `logprobs` only when the request asked for them (OpenAI's per-token entry). */
  | { type: 'token'; attempt: number; text: string; choice?: number; logprobs?: unknown }
  /** A tool-call fragment: `call` indexes the call within its choice; id and name come with its first fragment. */
  | { type: 'tool_call'; attempt: number; choice: number; call: number; id?: string; name?: string; arguments: string }
  | { type: 'restart'; attempt: number; reason: string }
  /** `choices` only with n > 1: every choice's finish reason (`finishReason` is choice 0's). */
  | { type: 'completed'; attempt: number; finishReason: FinishReason; usage: Usage; choices?: { index: number; finishReason: FinishReason }[] }
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

/** An append to a log that already holds its terminal event; nothing was appended. */
export class LogEndedError extends Error {
  override readonly name = 'LogEndedError';
  constructor(readonly terminal: LogEvent) {
    super(`the event log already ended at seq ${terminal.seq} (${terminal.type})`);
  }
}

/** A burst may carry a terminal event only as its last event: refuses anything else (a caller's bug). */
export function assertBurst(events: readonly EventBody[]): void {
  for (let i = 0; i < events.length - 1; i++) {
    if (isTerminal(events[i]!)) throw new RangeError(`a burst's terminal event must come last (found ${events[i]!.type} at ${i} of ${events.length})`);
  }
}

/**
 * The answer of an append to a log that already ended with `terminal`: a lone terminal event
 * learns the log's terminal event; anything else is refused with LogEndedError.
 */
export function answerAfterEnd(terminal: LogEvent, events: readonly EventBody[]): LogEvent[] {
  if (events.length === 1 && isTerminal(events[0]!)) return [terminal];
  throw new LogEndedError(terminal);
}

export type ControlSignal = 'cancel';

export interface Subscription { close(): Promise<void> }

export interface Bus {
  /**
   * Atomically assigns the next sequence number, appends, refreshes the log's TTL and publishes live.
   * On a log that already ended: a terminal event returns the log's terminal event (not appended),
   * any other event throws LogEndedError.
   */
  append(requestId: string, event: EventBody): Promise<LogEvent>;
  /**
   * Appends several events in order, as `append` would one after another, in one operation (one
   * round trip where the backend allows): a burst of tokens costs one append, not one each.
   * Returns the logged events in the same order; an empty list appends nothing. An adapter that
   * cannot append a burst atomically throws PartialAppendError when it fails part-way. A terminal
   * event may only come last; on a log that ended the burst is treated as `append` treats an event
   * (an atomic adapter refuses the whole burst unless it is a lone terminal event).
   */
  appendMany(requestId: string, events: readonly EventBody[]): Promise<LogEvent[]>;
  /** Events with seq > afterSeq, in order (at most `limit`). Empty if the log expired or never existed. */
  read(requestId: string, afterSeq: number, limit?: number): Promise<LogEvent[]>;
  /** The log's terminal event, if it has one (a resume past the end of the log re-sends it). */
  terminal(requestId: string): Promise<LogEvent | undefined>;
  /** Live events appended after the subscription is active. Delivery may duplicate or skip; callers merge by seq. */
  subscribe(requestId: string, onEvent: (e: LogEvent) => void): Promise<Subscription>;
  /** Out-of-band signal to whoever runs the request (a cancel); not part of the log, not replayed. */
  publishControl(requestId: string, signal: ControlSignal): Promise<void>;
  onControl(requestId: string, onSignal: (signal: ControlSignal) => void): Promise<Subscription>;
  close(): Promise<void>;
}

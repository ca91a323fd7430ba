// The one resume runtime behind every delivery path (SSE, OpenAI SSE, WebSocket, blocking wait):
// history from the log, then live, merged by sequence so that each seq is delivered exactly once,
// in order, with no gap, whatever the bus's live channel duplicates, reorders or drops.
import { isTerminal, type Bus, type LogEvent } from '../ports/bus.ts';

export type FollowOutcome = 'terminal' | 'aborted';

/** Events read from the log, and handed to a listener, at a time. */
export const LOG_PAGE = 500;
/**
 * A resume's first page of history: small, so its first event reaches the listener quickly on a
 * bus whose read costs grow with the events read (NATS fetches them one message each). The pages
 * after it are LOG_PAGE: on NATS each page costs a consumer whose setup can take tens of ms, so
 * pages growing step by step would make a long replay slower.
 */
export const FIRST_LOG_PAGE = 8;
/** Backoff while the log cannot yet fill a gap the live channel revealed (e.g. a lagging replica). */
const GAP_RETRY_MS = [10, 25, 50, 100, 250, 500, 1000] as const;

/** Every event with seq > afterSeq, paging through `read` so no single call is unbounded. */
export async function readAll(bus: Bus, requestId: string, afterSeq: number, pageSize = LOG_PAGE): Promise<LogEvent[]> {
  const out: LogEvent[] = [];
  let after = afterSeq;
  for (;;) {
    const page = await bus.read(requestId, after, pageSize);
    for (const e of page) if (e.seq > after) { out.push(e); after = e.seq; }
    if (page.length < pageSize) return out;
  }
}

/**
 * Delivers the events of `requestId` after `afterSeq` in runs, awaiting `onEvents` before the next,
 * until a terminal event was delivered ('terminal') or `signal` aborts ('aborted'). Each run is
 * the next events in sequence that are at hand (a page of history, or a burst that arrived live
 * together), never past the terminal event: a stream's tokens cost one delivery per burst.
 */
export async function followEventRuns(
  bus: Bus,
  requestId: string,
  afterSeq: number,
  onEvents: (run: readonly LogEvent[]) => void | Promise<void>,
  opts: { signal: AbortSignal },
): Promise<FollowOutcome> {
  const { signal } = opts;
  if (signal.aborted) return 'aborted';
  let last = afterSeq;
  const pending = new Map<number, LogEvent>();
  let wake: (() => void) | undefined;
  const notify = (): void => { const w = wake; wake = undefined; w?.(); };

  /**
   * The terminal event of a log that ends at or before the listener's Last-Event-ID (a resume
   * past the end): sent again, so the stream still ends with it rather than waiting forever.
   */
  let endBehind: LogEvent | undefined;
  // Live first, so nothing appended while history is being read can fall between the two.
  const subscription = await bus.subscribe(requestId, (e) => {
    if (e.seq > last) {
      if (!pending.has(e.seq)) { pending.set(e.seq, e); notify(); }
    } else if (isTerminal(e)) {
      // Nothing is delivered after a terminal event, so one at or below `last` was never delivered.
      endBehind = e;
      notify();
    }
  });
  signal.addEventListener('abort', notify);
  try {
    let catchUp = false;
    let gapRetries = 0;
    if (await deliverHistory()) return 'terminal';
    if (last === afterSeq && afterSeq > 0) endBehind ??= behind(await bus.terminal(requestId));
    while (!signal.aborted) {
      if (endBehind) return (await deliver([endBehind])) ? 'terminal' : 'aborted';
      if (catchUp) {
        catchUp = false;
        const before = last;
        if (await deliverHistory()) return 'terminal';
        if (signal.aborted) break;
        gapRetries = last > before ? 0 : gapRetries + 1;
      }
      const run = takeRun();
      if (run.length > 0) {
        gapRetries = 0;
        if (await deliver(run)) return 'terminal';
        continue;
      }
      for (const seq of pending.keys()) if (seq <= last) pending.delete(seq);
      // A live event beyond last+1 means the live channel skipped something: the log has it.
      if (pending.size > 0) {
        catchUp = true;
        if (gapRetries > 0) await sleepOrWake(GAP_RETRY_MS[Math.min(gapRetries, GAP_RETRY_MS.length) - 1] ?? 1000);
        continue;
      }
      await new Promise<void>((resolve) => { wake = resolve; });
    }
    return 'aborted';
  } finally {
    signal.removeEventListener('abort', notify);
    await subscription.close();
  }

  /** Reads the log after `last` and delivers it; true once a terminal event was delivered. */
  async function deliverHistory(): Promise<boolean> {
    for (let pageSize = FIRST_LOG_PAGE; ; pageSize = LOG_PAGE) {
      const page = await bus.read(requestId, last, pageSize);
      if (signal.aborted) return false;
      // The log is the authority: a hole in it (trimmed by maxLen) cannot be filled by anyone.
      const run: LogEvent[] = [];
      for (const e of page) if (e.seq > (run.at(-1)?.seq ?? last)) run.push(e);
      if (run.length > 0 && (await deliver(run))) return true;
      if (page.length < pageSize) return false;
    }
  }

  /** The log's terminal event if the listener is already past it. */
  function behind(terminal: LogEvent | undefined): LogEvent | undefined {
    return terminal && terminal.seq <= last ? terminal : undefined;
  }

  /** The live events that follow `last` without a gap. */
  function takeRun(): LogEvent[] {
    const run: LogEvent[] = [];
    for (let e = pending.get(last + 1); e; e = pending.get(e.seq + 1)) {
      pending.delete(e.seq);
      run.push(e);
    }
    return run;
  }

  /** Hands a run over, cut after its terminal event; true if it held one (and nobody aborted meanwhile). */
  async function deliver(events: LogEvent[]): Promise<boolean> {
    if (signal.aborted) return false;
    const end = events.findIndex(isTerminal);
    const run = end === -1 ? events : events.slice(0, end + 1);
    await onEvents(run);
    last = run[run.length - 1]!.seq;
    for (const e of run) pending.delete(e.seq);
    return end !== -1 && !signal.aborted;
  }

  function sleepOrWake(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => { wake = undefined; resolve(); }, ms);
      wake = () => { clearTimeout(timer); resolve(); };
    });
  }
}

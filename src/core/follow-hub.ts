// One follower per request per process, fanned out to the listeners of that request in this
// process. N listeners of one request used to cost N bus subscriptions, N history reads and N
// watchdogs; now they cost one of each, plus a waker and a sequence number per listener.
//
// The hub follows the log with followEventRuns (history, then live, exactly once, in order, gaps
// repaired from the log) and keeps the events it delivered in a bounded tail. Each listener keeps
// its own position (`last`) and takes what follows it: from the tail when the tail holds
// everything after its position, otherwise from the log itself (the log is the authority), so a
// listener that resumes far behind, or falls behind the tail, reads its own history and then
// joins the tail. The hub never waits for a listener: a slow listener costs only its own socket
// (SseStream bounds that) and re-reads the log if it falls off the tail. Delivery per listener
// keeps followEventRuns' contract: every seq > afterSeq once, in order, ending after the terminal
// event; a listener at or past the terminal event gets it again.
import { setMaxListeners } from 'node:events';
import { isTerminal, type Bus, type LogEvent } from '../ports/bus.ts';
import { followEventRuns, LOG_PAGE, type FollowOutcome } from './event-follow.ts';

/** Events a hub keeps for listeners that are behind it; it trims to this once it holds twice as many. */
export const HUB_TAIL = 1024;

/** 'gone': the watch said the request ended without a log to follow (the caller delivers the stored result). */
export type HubOutcome = FollowOutcome | 'gone';

export interface HubFollowOptions {
  /** The listener stops ('aborted') when any of these aborts. */
  signals: readonly AbortSignal[];
  /**
   * Checked every `everyMs` while the request has listeners here, once per request (not per
   * listener): true ends every listener that has not reached the terminal event with 'gone'.
   * The first listener's watch is the hub's.
   */
  watch?: { everyMs: number; gone(requestId: string): Promise<boolean> };
}

class Hub {
  /** Delivered events with seq > coveredAfter, in increasing seq: everything the log held there. */
  private tail: LogEvent[] = [];
  /** The tail holds every event of the log after this seq (up to `last`). */
  coveredAfter: number;
  /** The last seq the follower delivered. */
  last: number;
  terminal: LogEvent | undefined;
  failure: { error: unknown } | undefined;
  gone = false;
  readonly wakers = new Set<() => void>();
  private readonly stop = new AbortController();
  private readonly watchdog: NodeJS.Timeout | undefined;
  /** Whether the follower handed over events since the watchdog's last tick; a quiet hub probes the log. */
  private heard = false;
  private probing = false;

  constructor(bus: Bus, readonly requestId: string, startAfter: number, private readonly tailSize: number, watch: HubFollowOptions['watch'], onFailed: (hub: Hub) => void) {
    this.coveredAfter = startAfter;
    this.last = startAfter;
    followEventRuns(bus, requestId, startAfter, (run) => this.push(run), { signal: this.stop.signal }).then(
      () => this.wakeAll(),
      (error: unknown) => { this.failure = { error }; onFailed(this); this.wakeAll(); },
    );
    if (watch) {
      this.watchdog = setInterval(() => {
        if (this.terminal) return;
        if (!this.heard) this.probe(bus);
        this.heard = false;
        watch.gone(requestId).then((gone) => { if (gone && !this.terminal) { this.gone = true; this.wakeAll(); } }, () => {});
      }, watch.everyMs);
      this.watchdog.unref();
    }
  }

  /**
   * Reads the log after the last event delivered, and hands on what follows it. The live channel
   * may lose events (core NATS is at-most-once: a reconnect, a slow-consumer cut or a leaf cut from
   * its hub drops what was published meanwhile); the follower notices a gap only when a later
   * event arrives, so losing a log's last events, its terminal event above all, would leave every
   * listener waiting for good (the watch finds the request ended and its log intact, and does
   * nothing). One read per quiet request per tick, whatever the bus.
   */
  private probe(bus: Bus): void {
    if (this.probing) return;
    this.probing = true;
    bus.read(this.requestId, this.last, LOG_PAGE).then((page) => {
      const run: LogEvent[] = [];
      for (const e of page) if (e.seq === (run.at(-1)?.seq ?? this.last) + 1) run.push(e);
      if (run.length > 0 && !this.terminal) this.push(run);
    }, () => { /* the bus is out of reach: the next tick tries again */ }).finally(() => { this.probing = false; });
  }

  private push(run: readonly LogEvent[]): void {
    this.heard = true;
    for (const e of run) {
      if (e.seq > this.last) {
        this.tail.push(e);
        this.last = e.seq;
        if (isTerminal(e)) this.terminal = e;
      } else if (isTerminal(e)) {
        // A log that ended at or before where the hub started: its end, for listeners past it.
        this.terminal = e;
      }
    }
    if (this.tail.length >= 2 * this.tailSize) {
      const cut = this.tail.length - this.tailSize;
      this.coveredAfter = this.tail[cut - 1]!.seq;
      this.tail = this.tail.slice(cut);
    }
    this.wakeAll();
  }

  /** Up to `max` events after `seq` from the tail (seq >= coveredAfter). */
  after(seq: number, max: number): LogEvent[] {
    const t = this.tail;
    let lo = 0, hi = t.length;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (t[mid]!.seq <= seq) lo = mid + 1; else hi = mid; }
    return t.slice(lo, lo + max);
  }

  wakeAll(): void { for (const w of this.wakers) w(); }

  close(): void {
    this.stop.abort();
    if (this.watchdog) clearInterval(this.watchdog);
  }
}

/** The hubs of one bus in this process, by request id: one per app instance (app.ts makes it and hands it to the routes). */
export class FollowHubs {
  private readonly hubs = new Map<string, Hub>();

  constructor(private readonly bus: Bus, private readonly tailSize = HUB_TAIL) {}

  /** Requests followed now (one hub each). */
  get size(): number { return this.hubs.size; }

  /**
   * Delivers the events of `requestId` after `afterSeq` in runs, awaiting `onEvents` before the
   * next, until a terminal event was delivered ('terminal'), a signal aborts ('aborted'), or the
   * watch found no log to follow ('gone'). Same contract as followEventRuns.
   */
  async follow(requestId: string, afterSeq: number, onEvents: (run: readonly LogEvent[]) => void | Promise<void>, opts: HubFollowOptions): Promise<HubOutcome> {
    const { signals } = opts;
    const aborted = (): boolean => signals.some((s) => s.aborted);
    if (aborted()) return 'aborted';
    let hub = this.hubs.get(requestId);
    if (!hub) {
      hub = new Hub(this.bus, requestId, afterSeq, this.tailSize, opts.watch, (h) => { if (this.hubs.get(h.requestId) === h) this.hubs.delete(h.requestId); });
      this.hubs.set(requestId, hub);
    }
    let last = afterSeq;
    let wake: (() => void) | undefined;
    const waker = (): void => { const w = wake; wake = undefined; w?.(); };
    hub.wakers.add(waker);
    for (const s of signals) { unbounded(s); s.addEventListener('abort', waker); }
    try {
      while (!aborted()) {
        if (hub.gone) return 'gone';
        let run: LogEvent[] = [];
        if (last < hub.coveredAfter) {
          // Behind the tail: the log has what this listener has not seen yet.
          const page = await this.bus.read(requestId, last, LOG_PAGE);
          if (aborted()) break;
          for (const e of page) if (e.seq > (run.at(-1)?.seq ?? last)) run.push(e);
        }
        if (run.length === 0 && hub.last > last) run = hub.after(last, LOG_PAGE);
        if (run.length === 0 && hub.terminal && hub.terminal.seq <= last) run = [hub.terminal];
        if (run.length > 0) {
          const end = run.findIndex(isTerminal);
          if (end !== -1) run = run.slice(0, end + 1);
          await onEvents(run);
          last = run[run.length - 1]!.seq;
          if (end !== -1) return aborted() ? 'aborted' : 'terminal';
          continue;
        }
        if (hub.failure) throw hub.failure.error;
        await new Promise<void>((resolve) => { wake = resolve; });
      }
      return 'aborted';
    } finally {
      for (const s of signals) s.removeEventListener('abort', waker);
      hub.wakers.delete(waker);
      if (hub.wakers.size === 0) {
        hub.close();
        if (this.hubs.get(requestId) === hub) this.hubs.delete(requestId);
      }
    }
  }
}

/** Signals shared by many listeners (the process's drain handoff) carry one waker per listener: no leak warning for them. */
const shared = new WeakSet<AbortSignal>();
function unbounded(signal: AbortSignal): void {
  if (shared.has(signal)) return;
  shared.add(signal);
  setMaxListeners(0, signal);
}


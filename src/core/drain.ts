// Graceful drain of a gateway (docs/operations.md, "Draining"). On SIGTERM the process stops
// accepting (readiness answers 503 so a load balancer stops sending; new requests get 503
// SLUICE_ERR_DRAINING with Retry-After), lets what it serves finish for up to drainMs, then hands
// the rest off: the `handoff` signal stops direct-mode attempts (their requests go to the queue,
// where a worker continues them under a new attempt), ends SSE listeners so they resume with
// Last-Event-ID on another instance, and closes WebSockets with 1012 so they resume with `after`.
import { setMaxListeners } from 'node:events';
import { SluiceError } from './errors.ts';

/** What drain waits for: anything that emits 'close' once when it is done (an HTTP response). */
export interface Closable { once(event: 'close', listener: () => void): unknown }

export class Drain {
  private readonly handoffs = new AbortController();
  /** Every running direct attempt and listener waits on `handoff`: a thousand, not a leak. */
  constructor() { setMaxListeners(0, this.handoffs.signal); }
  /** Responses being served; counted, not held, so tracking one costs no allocation. */
  private open = 0;
  private idleWaiters: (() => void)[] = [];
  private state: 'serving' | 'draining' = 'serving';

  /** True from begin() on: nothing new is accepted. */
  get draining(): boolean { return this.state === 'draining'; }

  /** Aborts at the end of the grace period: work still running here is handed to another process. */
  get handoff(): AbortSignal { return this.handoffs.signal; }

  /** Work that drain waits for (a response being served), until it emits 'close'. */
  track(work: Closable): void {
    this.open++;
    work.once('close', this.closed);
  }

  private readonly closed = (): void => {
    if (--this.open > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  };

  /** Live work tracked now. */
  get active(): number { return this.open; }

  /** Throws SLUICE_ERR_DRAINING once draining: the caller should retry (another instance answers). */
  assertAccepting(): void {
    if (this.draining) throw drainingError();
  }

  begin(): void { this.state = 'draining'; }

  /** Resolves true once no tracked work is left (work tracked meanwhile included), false after `ms`. */
  idle(ms: number): Promise<boolean> {
    if (this.open === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = () => { clearTimeout(timer); resolve(true); };
      const timer = setTimeout(() => { this.idleWaiters = this.idleWaiters.filter((w) => w !== wake); resolve(false); }, ms);
      this.idleWaiters.push(wake);
    });
  }

  handOff(): void { this.begin(); this.handoffs.abort(); }

  /** Calls fn at the hand-off; returns the function that unregisters it. */
  onHandoff(fn: () => void): () => void {
    if (this.handoff.aborted) { fn(); return () => {}; }
    this.handoff.addEventListener('abort', fn, { once: true });
    return () => this.handoff.removeEventListener('abort', fn);
  }
}

export function drainingError(message?: string, headers: Record<string, string> = {}): SluiceError {
  return new SluiceError('SLUICE_ERR_DRAINING', message, { headers: { 'retry-after': '1', ...headers } });
}

/** Resolves true once `live` is empty (it shrinks as its work settles, and may grow meanwhile), false after `ms`. */
export async function settledWithin(live: ReadonlySet<Promise<unknown>>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (live.size > 0) {
    const left = until - Date.now();
    if (left <= 0) return false;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...live]), new Promise((r) => { timer = setTimeout(r, left); })]);
    clearTimeout(timer);
  }
  return true;
}

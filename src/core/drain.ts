// Graceful drain of a gateway (docs/operations.md, "Draining"). On SIGTERM the process stops
// accepting (readiness answers 503 so a load balancer stops sending; new requests get 503
// SLUICE_ERR_DRAINING with Retry-After), lets what it serves finish for up to drainMs, then hands
// the rest off: the `handoff` signal stops direct-mode attempts (their requests go to the queue,
// where a worker continues them under a new attempt), ends SSE listeners so they resume with
// Last-Event-ID on another instance, and closes WebSockets with 1012 so they resume with `after`.
import { SluiceError } from './errors.ts';

export class Drain {
  private readonly handoffs = new AbortController();
  private readonly live = new Set<Promise<unknown>>();
  private state: 'serving' | 'draining' = 'serving';

  /** True from begin() on: nothing new is accepted. */
  get draining(): boolean { return this.state === 'draining'; }

  /** Aborts at the end of the grace period: work still running here is handed to another process. */
  get handoff(): AbortSignal { return this.handoffs.signal; }

  /** Work that drain waits for (a response being served); it leaves the set when it settles. */
  track(work: Promise<unknown>): void {
    this.live.add(work);
    void work.finally(() => this.live.delete(work)).catch(() => {});
  }

  /** Live work tracked now. */
  get active(): number { return this.live.size; }

  /** Throws SLUICE_ERR_DRAINING once draining: the caller should retry (another instance answers). */
  assertAccepting(): void {
    if (this.draining) throw drainingError();
  }

  begin(): void { this.state = 'draining'; }

  /** Resolves true once no tracked work is left (work tracked meanwhile included), false after `ms`. */
  idle(ms: number): Promise<boolean> { return settledWithin(this.live, ms); }

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

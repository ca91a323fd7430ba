// Keeps the claims of a process's running attempts alive, all on one timer. Each tick renews every
// held claim in the same event-loop turn, so the store runs them as a few multi-row statements
// (batch.ts) instead of one UPDATE and one read per attempt on a timer of its own: a thousand open
// streams renewed every 5 s were 400 statements a second, spread over the seconds so that no two
// shared one. A renewal also says whether a cancel was asked for (the store's fallback when the
// bus's control message was missed).
import type { RequestRecord, Store } from '../ports/store.ts';
import type { Logger } from './logger.ts';

export interface ClaimHandlers {
  /** The claim is gone (another worker took the request over): stop working on it. */
  lost(): void;
  /** A cancel was asked for. */
  cancel(): void;
  /** After each successful renewal (queue heartbeats for long generations). */
  renewed?: () => Promise<void>;
}

export interface HeldClaim { release(): void }

interface Entry { id: string; workerId: string; attempt: number; on: ClaimHandlers; busy: boolean }

export class ClaimKeeper {
  private readonly held = new Set<Entry>();
  private timer: NodeJS.Timeout | undefined;

  /**
   * `intervalMs` is how often every claim is renewed, `claimMs` how long each renewal holds it. A
   * claim taken just after a tick is first renewed one interval later: keep the interval well
   * under claimMs (the runner uses a third).
   */
  constructor(private readonly deps: { store: Store; logger: Logger; intervalMs: number; claimMs: number }) {}

  /** Renews the attempt's claim on every tick until released. */
  hold(record: RequestRecord, workerId: string, on: ClaimHandlers): HeldClaim {
    const entry: Entry = { id: record.id, workerId, attempt: record.attempt, on, busy: false };
    this.held.add(entry);
    this.timer ??= setInterval(() => this.tick(), this.deps.intervalMs);
    return {
      release: () => {
        if (!this.held.delete(entry) || this.held.size > 0) return;
        clearInterval(this.timer);
        this.timer = undefined;
      },
    };
  }

  /** Claims held now. */
  get size(): number { return this.held.size; }

  private tick(): void {
    // A renewal still running from the last tick (a slow or unreachable store) is not doubled.
    for (const e of this.held) if (!e.busy) void this.renew(e);
  }

  private async renew(e: Entry): Promise<void> {
    e.busy = true;
    try {
      const renewal = await this.deps.store.renewClaim(e.id, e.workerId, e.attempt, this.deps.claimMs);
      if (!this.held.has(e)) return;
      if (renewal === 'lost') return e.on.lost();
      if (renewal === 'cancel') e.on.cancel();
      await e.on.renewed?.();
    } catch (err) {
      this.deps.logger.warn({ request_id: e.id, err }, 'claim renewal failed');
    } finally {
      e.busy = false;
    }
  }
}

// Interest-based local fan-out shared by every Bus adapter: one native subscription per topic per
// process, however many local listeners it has.
import type { LogEvent, Subscription } from '../../ports/bus.ts';

/** Opens the native subscription for a topic; resolves to the function that closes it. */
export type OpenTopic<T> = (topic: string, deliver: (message: T) => void) => Promise<() => Promise<void>>;

interface Topic<T> { listeners: Set<(message: T) => void>; closer: Promise<() => Promise<void>> }

/**
 * Interest-based local fan-out shared by every Bus adapter: one native subscription per topic per
 * process, opened when the topic's first local listener arrives and closed when its last leaves.
 */
export class InterestFanout<T> {
  private readonly topics = new Map<string, Topic<T>>();

  constructor(private readonly open: OpenTopic<T>) {}

  /** Resolves once the native subscription is active, so messages published afterwards arrive. */
  async add(topic: string, listener: (message: T) => void): Promise<Subscription> {
    let entry = this.topics.get(topic);
    if (!entry) {
      const listeners = new Set<(message: T) => void>();
      // A message delivered on a closed topic reaches this entry's (by then empty) set, never a
      // newer entry for the same topic, so a quick close-and-reopen cannot duplicate.
      const created: Topic<T> = { listeners, closer: this.open(topic, (m) => emitTo(listeners, m)) };
      created.closer.catch(() => { if (this.topics.get(topic) === created) this.topics.delete(topic); });
      this.topics.set(topic, created);
      entry = created;
    }
    const active = entry;
    active.listeners.add(listener);
    try {
      await active.closer;
    } catch (err) {
      active.listeners.delete(listener);
      throw err;
    }
    let closed = false;
    return {
      close: async () => {
        if (closed) return;
        closed = true;
        active.listeners.delete(listener);
        if (active.listeners.size > 0 || this.topics.get(topic) !== active) return;
        this.topics.delete(topic);
        await (await active.closer)();
      },
    };
  }

  /** Drops every listener and closes every native subscription. */
  async closeAll(): Promise<void> {
    const entries = [...this.topics.values()];
    this.topics.clear();
    await Promise.allSettled(entries.map(async (e) => { e.listeners.clear(); await (await e.closer)(); }));
  }
}

/**
 * Wraps a topic's deliver function so each live message is parsed once, before the fan-out, and
 * every local listener shares the one event (read-only, as on the memory bus). A message that is
 * not JSON is dropped, as a listener's own parse failure was.
 */
export function decodingEvents(deliver: (e: LogEvent) => void): (message: string) => void {
  return (message) => {
    let event: LogEvent;
    try { event = JSON.parse(message) as LogEvent; } catch { return; }
    deliver(event);
  };
}

function emitTo<T>(listeners: Set<(message: T) => void>, message: T): void {
  for (const listener of [...listeners]) {
    // One listener's failure must not starve the others of the event.
    try { listener(message); } catch { /* isolated on purpose */ }
  }
}

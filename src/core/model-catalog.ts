// Which model ids this deployment serves: the configured list (the catalogue's ids, or
// MODEL_NAMES), else what the backend reports (refreshed at most every 30 s, so validation costs
// nothing on the hot path). A backend that cannot be asked is a 503 naming the cause, not "does
// not exist".
import type { ModelBackend } from '../ports/model.ts';
import { SluiceError } from './errors.ts';

const REFRESH_MS = 30_000;

export class ModelCatalog {
  private known: Set<string> = new Set();
  private fetchedAt = 0;
  private pending: Promise<void> | null = null;
  /** Why the last refresh failed, while it stays the last. */
  private failure: string | null = null;

  constructor(private readonly backend: ModelBackend, configured: readonly string[], private readonly now: () => number = Date.now) {
    if (configured.length) { this.known = new Set(configured); this.fetchedAt = Infinity; }
  }

  async list(): Promise<string[]> {
    await this.refresh();
    return [...this.known];
  }

  async assertKnown(model: string): Promise<void> {
    if (!this.known.has(model)) await this.refresh(true);
    if (this.known.has(model)) return;
    if (this.failure !== null && this.known.size === 0) {
      throw new SluiceError('SLUICE_ERR_MODEL_UNAVAILABLE', `The model backend could not be asked for its models: ${this.failure}`, { param: 'model', headers: { 'retry-after': '5' } });
    }
    throw new SluiceError('SLUICE_ERR_UNKNOWN_MODEL', `The model "${model}" does not exist; see GET /v1/models`, { param: 'model' });
  }

  /**
   * Direct mode runs the model in the request's own call: when no deployment can take it now,
   * refuse (503 with Retry-After) before anything is reserved, rather than hold the client waiting.
   */
  assertAvailable(model: string): void {
    const a = this.backend.availability?.(model);
    if (!a || a.ok) return;
    const headers = { 'retry-after': String(a.retryAfterS) };
    if (a.reason === 'busy') throw new SluiceError('SLUICE_ERR_MODEL_BUSY', `Every deployment of "${model}" is at its capacity; retry in ${a.retryAfterS}s`, { param: 'model', headers });
    throw new SluiceError('SLUICE_ERR_MODEL_UNAVAILABLE', `No deployment of "${model}" (or of its fallbacks) is healthy now; retry in ${a.retryAfterS}s`, { param: 'model', headers });
  }

  private async refresh(force = false): Promise<void> {
    if (this.fetchedAt === Infinity) return;
    if (!force && this.now() - this.fetchedAt < REFRESH_MS) return;
    if (force && this.now() - this.fetchedAt < 1000) return;
    this.pending ??= this.backend.models().then((ids) => { this.known = new Set(ids); this.fetchedAt = this.now(); this.failure = null; })
      .catch((err: unknown) => { this.fetchedAt = this.now(); this.failure = err instanceof Error ? err.message : String(err); })
      .finally(() => { this.pending = null; });
    await this.pending;
  }
}

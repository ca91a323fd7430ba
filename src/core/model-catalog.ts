// Which model ids this deployment serves: the configured list, else what the backend reports
// (refreshed at most every 30 s, so validation costs nothing on the hot path).
import type { ModelBackend } from '../ports/model.ts';
import { SluiceError } from './errors.ts';

const REFRESH_MS = 30_000;

export class ModelCatalog {
  private known: Set<string> = new Set();
  private fetchedAt = 0;
  private pending: Promise<void> | null = null;

  constructor(private readonly backend: ModelBackend, configured: readonly string[], private readonly now: () => number = Date.now) {
    if (configured.length) { this.known = new Set(configured); this.fetchedAt = Infinity; }
  }

  async list(): Promise<string[]> {
    await this.refresh();
    return [...this.known];
  }

  async assertKnown(model: string): Promise<void> {
    if (!this.known.has(model)) await this.refresh(true);
    if (!this.known.has(model)) throw new SluiceError('SLUICE_ERR_UNKNOWN_MODEL', `The model "${model}" does not exist; see GET /v1/models`, { param: 'model' });
  }

  private async refresh(force = false): Promise<void> {
    if (this.fetchedAt === Infinity) return;
    if (!force && this.now() - this.fetchedAt < REFRESH_MS) return;
    if (force && this.now() - this.fetchedAt < 1000) return;
    this.pending ??= this.backend.models().then((ids) => { this.known = new Set(ids); this.fetchedAt = this.now(); })
      .catch(() => { this.fetchedAt = this.now(); })
      .finally(() => { this.pending = null; });
    await this.pending;
  }
}

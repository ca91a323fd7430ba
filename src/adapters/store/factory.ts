// Picks the Store adapter from the database URL's scheme and imports its driver lazily, so the
// embedded default never loads `pg` and a PostgreSQL deployment never loads PGlite.
//   pglite://memory          in-memory PGlite (lost on close)
//   pglite://./relative/dir  PGlite on disk, relative to the working directory
//   pglite:///absolute/dir   PGlite on disk
//   postgres://… postgresql://…  PostgreSQL
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { SluiceError } from '../../core/errors.ts';
import type { Store } from '../../ports/store.ts';
import { SqlStore } from './sql-store.ts';
import type { SqlClient } from './sql-store.ts';

const PGLITE = 'pglite://';

/** PGlite has one connection: one batch of a statement at a time. A pool overlaps a few. */
const BATCHES_IN_FLIGHT = { pglite: 1, postgres: 4 };

async function openClient(url: string): Promise<SqlClient> {
  if (url.startsWith(PGLITE)) {
    const target = url.slice(PGLITE.length);
    if (target === '') throw new SluiceError('SLUICE_ERR_CONFIG', `pglite URL needs a directory or "memory": ${url}`);
    if (target === 'memory') return (await import('./pglite.ts')).openPglite(null);
    const dir = resolve(target);
    await mkdir(dirname(dir), { recursive: true });
    return (await import('./pglite.ts')).openPglite(dir);
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    return (await import('./postgres.ts')).openPostgres(url);
  }
  throw new SluiceError('SLUICE_ERR_CONFIG', `Unsupported database URL scheme: ${url.split(':')[0] ?? url}`);
}

/** Opens the store for `url`; applies pending migrations unless `migrate: false`. */
export async function createStore(url: string, opts: { migrate?: boolean } = {}): Promise<Store> {
  const store = new SqlStore(await openClient(url), {
    batchesInFlight: url.startsWith(PGLITE) ? BATCHES_IN_FLIGHT.pglite : BATCHES_IN_FLIGHT.postgres,
  });
  if (opts.migrate ?? true) {
    try {
      await store.migrate();
    } catch (e) {
      await store.close().catch(() => {});
      throw e;
    }
  }
  return store;
}

// Picks the Store adapter from the database URL's scheme and imports its driver lazily, so the
// embedded default never loads `pg` and a PostgreSQL deployment never loads PGlite.
//   pglite://memory          in-memory PGlite (lost on close)
//   pglite://./relative/dir  PGlite on disk, relative to the working directory
//   pglite:///absolute/dir   PGlite on disk
//   postgres://… postgresql://…  PostgreSQL
// PGlite runs on the calling thread, or in a worker thread (pglite-thread.ts) with `pgliteWorker`.
import { resolve } from 'node:path';
import { SluiceError } from '../../core/errors.ts';
import type { Store } from '../../ports/store.ts';
import type { PgliteOptions } from './pglite.ts';
import { urlScheme } from '../url-scheme.ts';
import { SqlStore } from './sql-store.ts';
import type { SqlClient } from './sql-store.ts';

/** The schemes createStore accepts (checked before start-up opens anything). */
export const STORE_SCHEMES = ['pglite', 'postgres', 'postgresql'] as const;

/** PGlite's options apply to pglite:// only. */
export interface StoreOptions extends PgliteOptions {
  /** pglite://: run PGlite in a worker thread of its own (pglite-thread.ts) instead of on the
   *  calling thread (default false: on a 2-core machine the messages cost more than they free). */
  pgliteWorker?: boolean;
  /** Apply pending migrations (default true). */
  migrate?: boolean;
  /** PostgreSQL: how long opening a connection may take (default 5 s). */
  connectTimeoutMs?: number;
}

async function openClient(url: string, opts: StoreOptions): Promise<SqlClient> {
  const scheme = urlScheme(url);
  switch (scheme) {
    case 'pglite': {
      const target = url.startsWith('pglite://') ? url.slice('pglite://'.length) : '';
      if (target === '') throw new SluiceError('SLUICE_ERR_CONFIG', `A pglite URL is pglite://DIRECTORY or pglite://memory, not ${url}`);
      const dataDir = target === 'memory' ? null : resolve(target);
      if (opts.pgliteWorker) return (await import('./pglite-thread.ts')).openPgliteThread(dataDir, opts);
      return (await import('./pglite.ts')).openPglite(dataDir, opts);
    }
    case 'postgres':
    case 'postgresql':
      return (await import('./postgres.ts')).openPostgres(url, { ...(opts.connectTimeoutMs !== undefined && { connectTimeoutMs: opts.connectTimeoutMs }) });
    default:
      throw new SluiceError('SLUICE_ERR_CONFIG', `Unsupported database URL scheme: ${scheme || url}`);
  }
}

/** Opens the store for `url`; applies pending migrations unless `migrate: false`. */
export async function createStore(url: string, opts: StoreOptions = {}): Promise<Store> {
  const store = new SqlStore(await openClient(url, opts));
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

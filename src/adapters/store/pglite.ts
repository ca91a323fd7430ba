// PGlite driver: embedded PostgreSQL (WASM) in this process, in memory or in a directory.
// PGlite has a single connection and serializes every query and transaction behind one mutex,
// so a transaction body must use only the `tx` it is given (using the outer handle would wait
// for the transaction that is waiting for it).
import type { Row, SqlClient, SqlExecutor } from './sql-store.ts';

interface PgliteExecutor {
  query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>;
  exec(sql: string): Promise<unknown>;
}

function executor(db: PgliteExecutor): SqlExecutor {
  return {
    query: async (sql, params = []) => (await db.query<Row>(sql, [...params])).rows,
    exec: async (sql) => { await db.exec(sql); },
  };
}

/** Opens PGlite on `dataDir`, or in memory when dataDir is null. */
export async function openPglite(dataDir: string | null): Promise<SqlClient> {
  const { PGlite } = await import('@electric-sql/pglite');
  const db = dataDir === null ? await PGlite.create() : await PGlite.create(dataDir);
  return {
    ...executor(db),
    transaction: (fn) => db.transaction((tx) => fn(executor(tx))),
    close: () => db.close(),
  };
}

// PostgreSQL driver over a `pg` Pool. Statements outside a transaction take any pooled
// connection; a transaction holds one connection from BEGIN to COMMIT/ROLLBACK.
import type { Row, SqlClient, SqlExecutor } from './sql-store.ts';

/** Connections per process: enough for a worker's concurrent claims and finishes, small enough
 *  that several gateways and workers stay under PostgreSQL's default max_connections (100). */
const POOL_SIZE = 10;
/** Batches of one hot statement at once: a few of the pool's connections, never all of them. */
const BATCHES_IN_FLIGHT = 4;

export async function openPostgres(url: string): Promise<SqlClient> {
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({
    connectionString: url,
    max: POOL_SIZE,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 5_000,
  });
  // An idle connection that dies (server restart) must not crash the process: the pool drops it
  // and the next query either gets a fresh connection or fails with a mapped error.
  pool.on('error', () => {});

  // Named statements: pg parses and plans each one once per connection, then only binds.
  const names = new Map<string, string>();
  const nameOf = (sql: string) => { let n = names.get(sql); if (!n) { n = `sluice_${names.size + 1}`; names.set(sql, n); } return n; };
  const over = (c: { query(q: { name?: string; text: string; values?: unknown[] }): Promise<{ rows: Row[] }> }): SqlExecutor => ({
    query: async (sql, params = []) => (await c.query(params.length ? { name: nameOf(sql), text: sql, values: [...params] } : { text: sql })).rows,
    exec: async (sql) => { await c.query({ text: sql }); },
  });

  return {
    parallelism: BATCHES_IN_FLIGHT,
    ...over(pool),
    async transaction(fn) {
      const conn = await pool.connect();
      let broken: Error | undefined;
      try {
        await conn.query('BEGIN');
        const result = await fn(over(conn));
        await conn.query('COMMIT');
        return result;
      } catch (e) {
        try {
          await conn.query('ROLLBACK');
        } catch (rollbackFailure) {
          // A connection that cannot roll back is not returned to the pool.
          broken = rollbackFailure instanceof Error ? rollbackFailure : new Error(String(rollbackFailure));
        }
        throw e;
      } finally {
        conn.release(broken);
      }
    },
    close: () => pool.end(),
  };
}

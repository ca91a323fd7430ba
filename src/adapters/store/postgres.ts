// PostgreSQL driver over a `pg` Pool. Statements outside a transaction take any pooled
// connection; a transaction holds one connection from BEGIN to COMMIT/ROLLBACK.
import { SluiceError } from '../../core/errors.ts';
import { ConnectTimeout, hostPort, unreachable, type Endpoint } from '../endpoint.ts';
import { redact } from '../url-scheme.ts';
import type { PoolClient } from 'pg';
import type { Row, SqlClient, SqlExecutor } from './sql-store.ts';

/** Connections per process: enough for a worker's concurrent claims and finishes, small enough
 *  that several gateways and workers stay under PostgreSQL's default max_connections (100). */
const POOL_SIZE = 10;
/** Batches of one hot statement at once: a few of the pool's connections, never all of them. */
const BATCHES_IN_FLIGHT = 4;

export interface PostgresOptions {
  /** How long opening a connection may take, at start and later (default 5 s). */
  connectTimeoutMs?: number;
}

/**
 * Why the first connection failed, and what to do: a server that cannot be reached is
 * SLUICE_ERR_UNAVAILABLE naming host:port and the socket error; a database or role that does not
 * exist, or a refused login, is SLUICE_ERR_CONFIG naming it (the server's own words name it).
 */
function openFailure(url: string, e: unknown, timeoutMs: number): SluiceError {
  const ep: Endpoint = { service: 'store', field: 'DATABASE_URL', url };
  const where = `PostgreSQL at ${hostPort(url)} (DATABASE_URL=${redact(url)})`;
  const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
  const said = e instanceof Error ? e.message : String(e);
  const config = (what: string) => new SluiceError('SLUICE_ERR_CONFIG', `store: ${where}: ${said}. ${what}`, { param: 'DATABASE_URL', host: hostPort(url), sqlstate: code }, { cause: e });
  switch (code) {
    case '3D000': // invalid_catalog_name
      return config('Create the database (createdb, or CREATE DATABASE …) or fix its name in DATABASE_URL.');
    case '28000': // invalid_authorization_specification: no such role, or pg_hba.conf has no entry
      return config('Create the role (CREATE ROLE … LOGIN), allow it in pg_hba.conf, or fix the user in DATABASE_URL.');
    case '28P01': // invalid_password
      return config('Fix the password in DATABASE_URL (or the role\'s password on the server).');
    case '57P03': // cannot_connect_now
      return unreachable(ep, e, 'PostgreSQL is starting or shutting down: start again once it accepts connections.');
  }
  // pg's connectionTimeoutMillis fails with a bare message and no code.
  if (code === undefined && /timeout/i.test(said)) return unreachable(ep, new ConnectTimeout(timeoutMs));
  return unreachable(ep, e);
}

export async function openPostgres(url: string, opts: PostgresOptions = {}): Promise<SqlClient> {
  const { default: pg } = await import('pg');
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
  const pool = new pg.Pool({
    connectionString: url,
    max: POOL_SIZE,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: connectTimeoutMs,
  });
  // An idle connection that dies (server restart) must not crash the process: the pool drops it
  // and the next query either gets a fresh connection or fails with a mapped error.
  pool.on('error', () => {});
  // One round trip at open, so a wrong host, database, role or password stops the start here,
  // named, instead of surfacing as the first query's failure.
  try {
    await pool.query('SELECT 1');
  } catch (e) {
    await pool.end().catch(() => {});
    throw openFailure(url, e, connectTimeoutMs);
  }

  // Named statements: pg parses and plans each one once per connection, then only binds.
  const names = new Map<string, string>();
  const nameOf = (sql: string) => { let n = names.get(sql); if (!n) { n = `sluice_${names.size + 1}`; names.set(sql, n); } return n; };
  const over = (c: { query(q: { name?: string; text: string; values?: unknown[] }): Promise<{ rows: Row[] }> }): SqlExecutor => ({
    query: async (sql, params = []) => (await c.query(params.length ? { name: nameOf(sql), text: sql, values: [...params] } : { text: sql })).rows,
    exec: async (sql) => { await c.query({ text: sql }); },
  });

  // A statement takes its connection here rather than through pool.query, so that not getting one
  // is told apart from the statement failing: the pool stayed full for connectTimeoutMs (every
  // connection busy under load) or the server cannot be reached. pg reports the first with a bare
  // message and no code, which became SLUICE_ERR_INTERNAL; then a failed batch (store/batch.ts)
  // was run again call by call, each call waiting connectTimeoutMs for a connection in turn: 256
  // calls, 21 minutes. No statement ran, so it is SLUICE_ERR_UNAVAILABLE, and a batch fails at once.
  const acquire = async (): Promise<PoolClient> => {
    try {
      return await pool.connect();
    } catch (e) {
      throw new SluiceError('SLUICE_ERR_UNAVAILABLE', `store: no PostgreSQL connection within ${connectTimeoutMs} ms (all ${POOL_SIZE} pooled connections busy, or ${hostPort(url)} unreachable)`, undefined, { cause: e });
    }
  };
  /** One statement on a connection of its own, given back after it (dropped if the statement failed, as pool.query does). */
  const onePooled = async <T>(run: (ex: SqlExecutor) => Promise<T>): Promise<T> => {
    const conn = await acquire();
    let failure: Error | undefined;
    try {
      return await run(over(conn));
    } catch (e) {
      failure = e instanceof Error ? e : new Error(String(e));
      throw e;
    } finally {
      conn.release(failure);
    }
  };

  return {
    parallelism: BATCHES_IN_FLIGHT,
    query: (sql, params) => onePooled((ex) => ex.query(sql, params)),
    exec: (sql) => onePooled((ex) => ex.exec(sql)),
    async transaction(fn) {
      const conn = await acquire();
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

// PGlite driver: embedded PostgreSQL (WASM) in this process, in memory or in a directory.
// PGlite has a single connection and serializes every query and transaction behind one mutex,
// so a transaction body must use only the `tx` it is given (using the outer handle would wait
// for the transaction that is waiting for it).
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SluiceError } from '../../core/errors.ts';
import { ensureCluster, fsErrorCode, startParams } from './pglite-cluster.ts';
import type { Row, SqlClient } from './sql-store.ts';

interface PgliteExecutor {
  query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>;
  exec(sql: string): Promise<{ rows: unknown[] }[]>;
}

export interface PgliteOptions {
  /** Told when a background VACUUM or ANALYZE fails (at most once a minute; it is retried every second). */
  onMaintenanceError?: (err: unknown) => void;
}

/** Opens PGlite on `dataDir`, or in memory when dataDir is null. */
export async function openPglite(dataDir: string | null, opts: PgliteOptions = {}): Promise<SqlClient> {
  const { PGlite } = await import('@electric-sql/pglite');
  const db = dataDir === null
    ? await PGlite.create({ startParams: startParams(PGlite.defaultStartParams) })
    : await openOnDisk(PGlite, dataDir);
  // Literals below rely on it: a quote is the only character that needs escaping.
  await db.exec('SET standard_conforming_strings = on');
  // ANALYZE samples 300 rows per unit of target: 3,000 rows keep it short (see Maintenance).
  await db.exec('SET default_statistics_target = 10');
  const prepared = new PreparedStatements(db);
  const maintenance = new Maintenance(db, () => prepared.lastUse, opts.onMaintenanceError);
  return {
    // One connection: one batch of a statement at a time.
    parallelism: 1,
    query: (sql, params = []) => prepared.query(sql, params),
    exec: async (sql) => { await db.exec(sql); },
    // Inside a transaction only statements prepared before are used: a PREPARE is kept out of
    // transactions so a rollback can never leave the cache naming a statement that is gone.
    transaction: (fn) => db.transaction((tx) => fn({
      query: (sql, params = []) => prepared.query(sql, params, tx),
      exec: async (sql) => { await tx.exec(sql); },
    })),
    close: async () => { await maintenance.stop(); await db.close(); },
  };
}

/** File system errors that say the path is wrong for a store; others (ENOSPC, EIO) are disk faults. */
const PATH_ERRORS = new Set(['EACCES', 'EEXIST', 'EISDIR', 'ENOENT', 'ENOTDIR', 'ENOTEMPTY', 'EPERM', 'EROFS']);

/** Opens the cluster in `dataDir`, creating it (in a child process) and its parent directories if new. */
async function openOnDisk(PGlite: typeof import('@electric-sql/pglite').PGlite, dataDir: string) {
  try {
    await mkdir(dirname(dataDir), { recursive: true });
    await ensureCluster(dataDir);
    return await PGlite.create(dataDir, { startParams: startParams(PGlite.defaultStartParams) });
  } catch (e) {
    throw storeOpenError(dataDir, e);
  }
}

/** What opening (or creating) the store in `dataDir` failed with, as it is reported: a file system
 *  error names the path and the reason, and is a configuration error when the path is wrong. */
export function storeOpenError(dataDir: string, e: unknown): unknown {
  const code = fsErrorCode(e);
  if (code === undefined) return e;
  const message = `Cannot open the PGlite store in ${dataDir}: file system error ${code}`;
  if (PATH_ERRORS.has(code)) return new SluiceError('SLUICE_ERR_CONFIG', message, undefined, { cause: e });
  return new Error(message, { cause: e });
}

/** How often the tables' change counters are looked at. */
const MAINTENANCE_CHECK_MS = 1000;
/** A VACUUM waits for the store to have been quiet this long, unless the dead rows pile up far. */
const VACUUM_QUIET_MS = 250;
/** A failure that repeats every check is reported this often. */
const REPORT_EVERY_MS = 60_000;

/**
 * PGlite runs no autovacuum, so without this nothing would ever VACUUM or ANALYZE. The plans of the
 * prepared statements (generic, fixed at their sixth run, when the tables were nearly empty) would
 * go on seq-scanning tables that have since grown: in a streaming benchmark the finish statement
 * read 860,000 rows for 2,400 requests. And the dead index entries of finished requests would pile
 * up for every scan of the unfinished ones (the sweeper's) to step over.
 *
 * Everything here runs on the thread that serves requests, so it is kept short and rare:
 * - ANALYZE (which invalidates the stale plans) when a table has doubled since it was last
 *   analyzed: plans change as a table grows from empty, not as its rows are updated, and
 *   autovacuum's rule (10 % changed) fired every second under load, 20-40 ms each time. The
 *   statistics target is 10 (set at open): a 3,000-row sample, about 20 ms at 100,000 rows, where
 *   the default target took 190 ms;
 * - VACUUM by autovacuum's rule (50 rows plus 20 % dead) once the store has been quiet for
 *   VACUUM_QUIET_MS, because it scans every index of the table (84 ms at 74,000 rows); under
 *   unbroken load it runs anyway once the dead rows outnumber the live ones four times over.
 */
export class Maintenance {
  private readonly timer: NodeJS.Timeout;
  private running: Promise<void> | undefined;
  private stopped = false;
  private reportedAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly db: PgliteExecutor, private readonly lastUse: () => number, private readonly onError?: (err: unknown) => void) {
    this.timer = setInterval(() => { this.running ??= this.tick().finally(() => { this.running = undefined; }); }, MAINTENANCE_CHECK_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  private async tick(): Promise<void> {
    try {
      const { rows } = await this.db.query<{ relname: string; vacuum_due: boolean; vacuum_now: boolean; analyze_due: boolean }>(
        `SELECT relname, vacuum_due, vacuum_now, analyze_due FROM (
           SELECT s.relname,
                  s.n_dead_tup > 50 + 0.2 * s.n_live_tup AS vacuum_due,
                  s.n_dead_tup > 10000 + 4 * s.n_live_tup AS vacuum_now,
                  s.n_live_tup > 50 + 2 * greatest(c.reltuples, 0) AS analyze_due
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid) t
         WHERE vacuum_due OR analyze_due`);
      for (const t of rows) {
        if (this.stopped) return;
        const table = `"${t.relname.replaceAll('"', '""')}"`;
        const quiet = performance.now() - this.lastUse() >= VACUUM_QUIET_MS;
        if (t.vacuum_due && (quiet || t.vacuum_now)) await this.db.exec(`VACUUM (ANALYZE) ${table}`);
        else if (t.analyze_due) await this.db.exec(`ANALYZE ${table}`);
      }
    } catch (err) {
      // The next tick looks again; a failure that persists is reported, but not every second.
      if (this.stopped || performance.now() - this.reportedAt < REPORT_EVERY_MS) return;
      this.reportedAt = performance.now();
      this.onError?.(err);
    }
  }
}

/**
 * PGlite parses and plans every extended-protocol query again, which costs more than running it
 * (an insert: 0.8 ms, of which 0.5 ms is parse and plan). Each distinct parameterised statement
 * (the store's SQL is a fixed set) is PREPAREd once for the session and then run as EXECUTE with
 * quoted literals over the simple protocol: about 3x cheaper. A statement whose parameter types
 * cannot be inferred by PREPARE keeps using the extended protocol.
 */
class PreparedStatements {
  private readonly names = new Map<string, Promise<string | null>>();
  /** Statements whose PREPARE has completed. */
  private readonly ready = new Map<string, string>();

  /** When a statement last started (performance.now()). */
  lastUse = 0;

  constructor(private readonly db: PgliteExecutor) {}

  async query(sql: string, params: readonly unknown[], tx?: PgliteExecutor): Promise<Row[]> {
    this.lastUse = performance.now();
    const runner = tx ?? this.db;
    if (params.length === 0) return (await runner.query<Row>(sql)).rows;
    // In a transaction, never wait for a PREPARE: it would queue behind the transaction holding PGlite.
    const name = tx ? this.ready.get(sql) : await this.prepare(sql);
    if (!name) return (await runner.query<Row>(sql, [...params])).rows;
    const statement = `EXECUTE ${name}(${params.map(literal).join(', ')})`;
    return rowsOf(await runner.exec(statement));
  }

  private prepare(sql: string): Promise<string | null> {
    let name = this.names.get(sql);
    if (!name) {
      const id = `sluice_${this.names.size + 1}`;
      name = this.db.exec(`PREPARE ${id} AS ${sql}`).then(() => { this.ready.set(sql, id); return id; }, () => null);
      this.names.set(sql, name);
    }
    return name;
  }
}

const rowsOf = (results: { rows: unknown[] }[]): Row[] => (results[results.length - 1]?.rows ?? []) as Row[];

/** A SQL literal for EXECUTE; with standard_conforming_strings only quotes need doubling. */
export function literal(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`cannot send ${v} to the database`);
    return String(v);
  }
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  const text = v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v);
  // A NUL would end the statement text early; PostgreSQL refuses it in text values anyway.
  if (text.includes('\0')) throw new TypeError('text values cannot contain NUL characters');
  return `'${text.replaceAll("'", "''")}'`;
}

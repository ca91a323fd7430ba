// The messages between the gateway's thread and the PGlite worker thread (pglite-thread.ts,
// pglite-worker.ts). Values cross by structured clone: rows keep their Dates and parsed jsonb,
// and nothing is turned into JSON and back.
import { SluiceError, catalogue } from '../../core/errors.ts';
import type { ErrorCode } from '../../core/errors.ts';
import type { Row } from './sql-store.ts';

/** What the gateway's thread asks. `id` is unique per client; a transaction is named by the id of its `begin`. */
export type StoreRequest =
  | { id: number; kind: 'open'; dataDir: string | null }
  | { id: number; kind: 'query'; sql: string; params: readonly unknown[] }
  | { id: number; kind: 'exec'; sql: string }
  | { id: number; kind: 'begin' }
  | { id: number; kind: 'txQuery'; tx: number; sql: string; params: readonly unknown[] }
  | { id: number; kind: 'txExec'; tx: number; sql: string }
  | { id: number; kind: 'commit'; tx: number }
  | { id: number; kind: 'rollback'; tx: number }
  | { id: number; kind: 'close' };

/** The worker's answer to one request (rows for query and txQuery, nothing for the others), or an event of its own. */
export type StoreReply =
  | { id: number; rows?: Row[] }
  | { id: number; error: WireError }
  | { id: -1; kind: 'maintenanceError'; error: WireError };

/** An error as it crosses the thread: its message and name, the PostgreSQL fields, or a SluiceError's code. */
/**
 * Posts a turn's messages as one batch; when something in it cannot be cloned, posts each alone,
 * so only the message that does not clone fails (`onFail`). Both ends of the thread use it.
 */
export function postBatch<T>(post: (batch: T[]) => void, batch: T[], onFail: (m: T, e: unknown) => void): void {
  try { post(batch); } catch {
    for (const m of batch) {
      try { post([m]); } catch (e) { onFail(m, e); }
    }
  }
}

export interface WireError {
  message: string;
  name: string;
  stack?: string;
  /** SQLSTATE and the fields of a PostgreSQL error (code, constraint, detail, table, ...), or a file system error's code. */
  fields: Record<string, string | number>;
  /** Set when the error was a SluiceError. */
  sluice?: { code: ErrorCode; details?: Record<string, unknown> };
  cause?: WireError;
}

/** Fields of PGlite's DatabaseError (and of a Node system error) worth carrying across. */
const FIELDS = ['code', 'errno', 'severity', 'detail', 'hint', 'position', 'where', 'schema', 'table', 'column', 'dataType', 'constraint', 'routine'] as const;

export function toWire(e: unknown, depth = 0): WireError {
  if (!(typeof e === 'object' && e !== null)) return { message: String(e), name: 'Error', fields: {} };
  const o = e as Record<string, unknown>;
  const fields: Record<string, string | number> = {};
  for (const f of FIELDS) {
    const v = o[f];
    if (typeof v === 'string' || typeof v === 'number') fields[f] = v;
  }
  const wire: WireError = {
    message: typeof o.message === 'string' ? o.message : String(e),
    name: typeof o.name === 'string' ? o.name : 'Error',
    fields,
  };
  if (typeof o.stack === 'string') wire.stack = o.stack;
  if (e instanceof SluiceError) {
    wire.sluice = { code: e.code };
    // Details are plain data (param, host, sqlstate, headers); anything else would not clone.
    if (e.details) wire.sluice.details = JSON.parse(JSON.stringify(e.details)) as Record<string, unknown>;
  }
  if (o.cause !== undefined && depth < 3) wire.cause = toWire(o.cause, depth + 1);
  return wire;
}

/** The error again on this side: a SluiceError with its code, or an Error carrying the PostgreSQL fields. */
export function fromWire(w: WireError): Error {
  const cause = w.cause ? { cause: fromWire(w.cause) } : undefined;
  let e: Error;
  if (w.sluice && w.sluice.code in catalogue) {
    e = new SluiceError(w.sluice.code, w.message, w.sluice.details, cause);
  } else {
    e = new Error(w.message, cause);
    Object.defineProperty(e, 'name', { value: w.name, configurable: true, writable: true });
    Object.assign(e, w.fields);
  }
  if (w.stack) e.stack = w.stack;
  return e;
}

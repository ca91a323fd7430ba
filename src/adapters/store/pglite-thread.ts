// PGlite in a worker thread (SLUICE_PGLITE_THREAD=worker), behind the same SqlClient as in-thread
// PGlite (pglite.ts). PGlite runs every statement synchronously in WebAssembly: on the gateway's
// thread that was ~40-50 % of its CPU under non-streaming load, time during which nothing else ran.
// Here the gateway's thread posts the statements of one event-loop turn as one message (a batch
// of batch.ts is one statement) and receives the rows by structured clone. On a 2-core machine the
// messages cost more CPU than the move frees (docs/benchmarks.md §9), so it is not the default.
//
// The worker keeps the process alive only while a call is waiting for it, so an open store does
// not hold a process that has nothing else to do (as in-thread PGlite did not). If the thread
// dies, every waiting call and every later one fails with SLUICE_ERR_UNAVAILABLE; none hangs.
import { Worker } from 'node:worker_threads';
import { SluiceError } from '../../core/errors.ts';
import { fromWire, postBatch } from './pglite-protocol.ts';
import type { StoreReply, StoreRequest } from './pglite-protocol.ts';
import type { PgliteOptions } from './pglite.ts';
import type { Row, SqlClient, SqlExecutor } from './sql-store.ts';

type Ask = StoreRequest extends infer R ? R extends unknown ? Omit<R, 'id'> : never : never;
interface Waiter { resolve: (rows: Row[] | undefined) => void; reject: (e: unknown) => void }

/** The worker's module: compiled JavaScript in a build; the TypeScript sources (through tsx) in development. */
function workerEntry(): URL {
  const here = import.meta.url;
  return here.endsWith('.ts') ? new URL('./pglite-worker-dev.mjs', here) : new URL('./pglite-worker.js', here);
}

/** The process's Node options for the thread (--cpu-prof, --import, ...), less --input-type, which
 *  is for an -e script and would stop the thread from loading its module. */
function workerExecArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--input-type') { i++; continue; }
    if (!a.startsWith('--input-type=')) out.push(a);
  }
  return out;
}

class PgliteThread {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, Waiter>();
  /** Requests of this turn, posted together at its end. */
  private outbox: StoreRequest[] = [];
  private lastId = 0;
  /** Set once the thread can no longer answer: every call fails with it. */
  private down: Error | undefined;
  private closing: Promise<void> | undefined;

  constructor(entry: URL, private readonly opts: PgliteOptions) {
    this.worker = new Worker(entry, { execArgv: workerExecArgv(process.execArgv) });
    this.worker.unref();
    this.worker.on('message', (replies: StoreReply[]) => { for (const r of replies) this.receive(r); });
    this.worker.on('error', (err) => this.fail(new SluiceError('SLUICE_ERR_UNAVAILABLE', `The embedded store's worker thread failed: ${err.message}`, undefined, { cause: err })));
    this.worker.on('messageerror', (err) => {
      this.fail(new SluiceError('SLUICE_ERR_UNAVAILABLE', `The embedded store's worker thread sent a message that could not be read: ${err.message}`, undefined, { cause: err }));
      void this.worker.terminate();
    });
    this.worker.on('exit', (code) => this.fail(this.closing
      ? new Error('The PGlite store is closed')
      : new SluiceError('SLUICE_ERR_UNAVAILABLE', `The embedded store's worker thread exited (code ${code})`)));
  }

  call(ask: Ask): Promise<Row[] | undefined> {
    return this.post({ ...ask, id: ++this.lastId } as StoreRequest);
  }

  /** Opens a transaction; its statements, commit and rollback name it by the id returned. */
  async begin(): Promise<number> {
    const id = ++this.lastId;
    await this.post({ id, kind: 'begin' });
    return id;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        if (!this.down) await this.post({ id: ++this.lastId, kind: 'close' });
      } finally {
        await this.worker.terminate();
      }
    })();
    return this.closing;
  }

  private post(m: StoreRequest): Promise<Row[] | undefined> {
    if (this.down) return Promise.reject(this.down);
    return new Promise((resolve, reject) => {
      this.waiting.set(m.id, { resolve, reject });
      if (this.waiting.size === 1) this.worker.ref();
      this.outbox.push(m);
      if (this.outbox.length === 1) queueMicrotask(() => this.flush());
    });
  }

  /** Posts the requests made so far as one message: one wake-up of the thread for them all. */
  private flush(): void {
    const batch = this.outbox;
    if (batch.length === 0) return;
    this.outbox = [];
    // A parameter that cannot be cloned (a function, a symbol): that call's error only.
    postBatch((b) => this.worker.postMessage(b), batch, (m, e) => this.settle(m.id)?.reject(e));
  }

  /** Forgets the waiter of `id` and returns it. */
  private settle(id: number): Waiter | undefined {
    const w = this.waiting.get(id);
    if (!w) return undefined;
    this.waiting.delete(id);
    if (this.waiting.size === 0) this.worker.unref();
    return w;
  }

  private receive(r: StoreReply): void {
    if ('kind' in r) { this.opts.onMaintenanceError?.(fromWire(r.error)); return; }
    const w = this.settle(r.id);
    if (!w) return;
    if ('error' in r) w.reject(fromWire(r.error));
    else w.resolve(r.rows);
  }

  private fail(e: Error): void {
    this.down ??= e;
    const waiters = [...this.waiting.values()];
    this.waiting.clear();
    this.outbox = [];
    this.worker.unref();
    for (const w of waiters) w.reject(this.down);
  }
}

/** Opens PGlite on `dataDir` (in memory when null) in a worker thread running `entry` (a test passes its own). */
export async function openPgliteThread(dataDir: string | null, opts: PgliteOptions = {}, entry = workerEntry()): Promise<SqlClient> {
  const thread = new PgliteThread(entry, opts);
  try {
    await thread.call({ kind: 'open', dataDir });
  } catch (e) {
    await thread.close().catch(() => {});
    throw e;
  }
  const on = (tx: number): SqlExecutor => ({
    query: async (sql, params = []) => (await thread.call({ kind: 'txQuery', tx, sql, params })) ?? [],
    exec: async (sql) => { await thread.call({ kind: 'txExec', tx, sql }); },
  });
  return {
    parallelism: 1,
    query: async (sql, params = []) => (await thread.call({ kind: 'query', sql, params })) ?? [],
    exec: async (sql) => { await thread.call({ kind: 'exec', sql }); },
    async transaction(fn) {
      const tx = await thread.begin();
      let result;
      try {
        result = await fn(on(tx));
      } catch (e) {
        await thread.call({ kind: 'rollback', tx }).catch(() => {});
        throw e;
      }
      await thread.call({ kind: 'commit', tx });
      return result;
    },
    close: () => thread.close(),
  };
}

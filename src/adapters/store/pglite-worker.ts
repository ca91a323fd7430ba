// The PGlite worker thread: opens PGlite (openPglite: the same options, error mapping, prepared
// statements and maintenance as in one thread) and answers the gateway's messages
// (pglite-protocol.ts). Requests are started as they arrive, not one after the other: PGlite's own
// mutex orders them, and a transaction's statements must reach it while other requests wait for
// the transaction to end.
import { parentPort } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { openPglite } from './pglite.ts';
import { postBatch, toWire } from './pglite-protocol.ts';
import type { StoreReply, StoreRequest } from './pglite-protocol.ts';
import type { Row, SqlClient, SqlExecutor } from './sql-store.ts';

type TxStep = Extract<StoreRequest, { kind: 'txQuery' | 'txExec' | 'commit' | 'rollback' }>;

/** The statements of one open transaction, taken in the order they were sent. */
class Inbox {
  private readonly queue: TxStep[] = [];
  private waiting: ((m: TxStep) => void) | undefined;

  put(m: TxStep): void {
    if (this.waiting) { const w = this.waiting; this.waiting = undefined; w(m); } else this.queue.push(m);
  }

  /** What was sent but not taken (the transaction ended early). */
  drain(): TxStep[] { return this.queue.splice(0); }

  take(): Promise<TxStep> {
    const m = this.queue.shift();
    return m ? Promise.resolve(m) : new Promise((resolve) => { this.waiting = resolve; });
  }
}

/** Thrown inside PGlite's transaction to make it roll back. */
class RollbackRequested extends Error {
  constructor(readonly step: TxStep) { super('rollback requested'); }
}

class StoreServer {
  private client: SqlClient | undefined;
  private readonly transactions = new Map<number, Inbox>();
  /** Answers not yet posted: the answers of one turn go as one message (see flush). */
  private outbox: StoreReply[] = [];

  constructor(private readonly port: MessagePort) {}

  private send(reply: StoreReply): void {
    this.outbox.push(reply);
    if (this.outbox.length === 1) setImmediate(() => this.flush());
  }

  /**
   * Posts the turn's answers as one message. One message per answer cost a wake-up of the
   * gateway's thread each, and the callers, woken one by one, sent their next statements one by one
   * (batches of ~2 rows where in-thread PGlite, which answered everyone in one turn, made ~8).
   */
  private flush(): void {
    const replies = this.outbox;
    if (replies.length === 0) return;
    this.outbox = [];
    // Something in the rows did not clone: only that answer fails.
    postBatch((b) => this.port.postMessage(b), replies, (r, e) => this.port.postMessage([{ id: r.id, error: toWire(e) }]));
  }

  private fail(id: number, e: unknown): void { this.send({ id, error: toWire(e) }); }

  handle(m: StoreRequest): void {
    switch (m.kind) {
      case 'open': return void this.open(m.id, m.dataDir);
      case 'query': return void this.answer(m.id, () => this.db().query(m.sql, m.params));
      case 'exec': return void this.answer(m.id, async () => { await this.db().exec(m.sql); return undefined; });
      case 'begin': return this.begin(m.id);
      case 'txQuery': case 'txExec': case 'commit': case 'rollback': {
        const inbox = this.transactions.get(m.tx);
        if (inbox) inbox.put(m);
        else this.fail(m.id, new Error(`no open transaction ${m.tx}`));
        return;
      }
      case 'close': return void this.close(m.id);
    }
  }

  private db(): SqlClient {
    if (!this.client) throw new Error('the PGlite store is not open');
    return this.client;
  }

  private async open(id: number, dataDir: string | null): Promise<void> {
    try {
      this.client = await openPglite(dataDir, {
        onMaintenanceError: (err) => this.send({ id: -1, kind: 'maintenanceError', error: toWire(err) }),
      });
      this.send({ id });
    } catch (e) {
      this.fail(id, e);
    }
  }

  private async answer(id: number, run: () => Promise<Row[] | undefined>): Promise<void> {
    try {
      const rows = await run();
      this.send(rows ? { id, rows } : { id });
    } catch (e) {
      this.fail(id, e);
    }
  }

  /** Holds PGlite's connection in a transaction until the gateway sends commit or rollback. */
  private begin(id: number): void {
    const inbox = new Inbox();
    this.transactions.set(id, inbox);
    let begun = false;
    let end: TxStep | undefined;
    const body = async (tx: SqlExecutor): Promise<void> => {
      begun = true;
      this.send({ id });
      for (;;) {
        const step = await inbox.take();
        if (step.kind === 'commit') { end = step; return; }
        if (step.kind === 'rollback') throw new RollbackRequested(step);
        await this.answer(step.id, async () => {
          if (step.kind === 'txQuery') return tx.query(step.sql, step.params);
          await tx.exec(step.sql);
          return undefined;
        });
      }
    };
    let client: SqlClient;
    try { client = this.db(); } catch (e) { this.transactions.delete(id); this.fail(id, e); return; }
    client.transaction(body).then(
      () => { this.send({ id: (end as TxStep).id }); },
      (e: unknown) => {
        if (e instanceof RollbackRequested) this.send({ id: e.step.id });
        else if (!begun) this.fail(id, e);
        else if (end) this.fail(end.id, e); // COMMIT failed (the transaction was aborted, or a deferred check)
        else this.fail(id, e);
      },
    ).finally(() => {
      this.transactions.delete(id);
      for (const step of inbox.drain()) this.fail(step.id, new Error(`transaction ${id} has ended`));
    });
  }

  private async close(id: number): Promise<void> {
    try {
      await this.client?.close();
      this.client = undefined;
      this.send({ id });
    } catch (e) {
      this.fail(id, e);
    }
    // Nothing else is coming: let the thread end.
    this.flush();
    this.port.close();
  }
}

if (!parentPort) throw new Error('pglite-worker.ts runs as a worker thread (see pglite-thread.ts)');
const server = new StoreServer(parentPort);
parentPort.on('message', (batch: StoreRequest[]) => { for (const m of batch) server.handle(m); });

// PGlite in a worker thread (pglite-thread.ts): errors and transactions cross the thread as the
// store relies on, the thread does not keep a process alive, and a dead thread fails every call
// (waiting and later) with SLUICE_ERR_UNAVAILABLE instead of leaving it hanging.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openPgliteThread } from '../../src/adapters/store/pglite-thread.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import type { SqlClient } from '../../src/adapters/store/sql-store.ts';

const crashWorker = new URL('../helpers/pglite-crash-worker.mjs', import.meta.url);

describe('PGlite in a worker thread', { timeout: 120_000 }, () => {
  // One store for the tests that do not kill its thread (opening one takes seconds); a fresh table each.
  let shared: SqlClient;
  before(async () => { shared = await openPgliteThread(null); });
  after(async () => { await shared.close(); });
  async function withTable(fn: (db: SqlClient) => Promise<void>): Promise<void> {
    await shared.exec('DROP TABLE IF EXISTS t; CREATE TABLE t (id text PRIMARY KEY, n int NOT NULL CHECK (n >= 0), doc jsonb, at timestamptz DEFAULT now())');
    await fn(shared);
  }

  it('returns rows by structured clone: dates stay Dates, jsonb stays parsed', async () => {
    await withTable(async (db) => {
      const [row] = await db.query('INSERT INTO t (id, n, doc) VALUES ($1, $2, $3) RETURNING *', ['a', 1, JSON.stringify({ k: ["it's", 2] })]);
      assert.ok(row?.at instanceof Date);
      assert.deepEqual(row?.doc, { k: ["it's", 2] });
      assert.deepEqual(await db.query('SELECT id, n FROM t WHERE id = $1', ['a']), [{ id: 'a', n: 1 }]);
    });
  });

  it('carries the PostgreSQL fields of an error across: SQLSTATE, constraint, table', async () => {
    await withTable(async (db) => {
      await db.query('INSERT INTO t (id, n) VALUES ($1, $2)', ['a', 1]);
      await assert.rejects(db.query('INSERT INTO t (id, n) VALUES ($1, $2)', ['a', 2]), (e: unknown) => {
        const err = e as Error & { code?: string; constraint?: string; table?: string; detail?: string };
        assert.ok(err instanceof Error);
        assert.equal(err.code, '23505');
        assert.equal(err.constraint, 't_pkey');
        assert.equal(err.table, 't');
        assert.match(err.message, /duplicate key/);
        return true;
      });
      await assert.rejects(db.exec('SELEC 1'), (e: unknown) => (e as { code?: string }).code === '42601');
      // The thread still serves after errors.
      assert.deepEqual(await db.query('SELECT count(*)::int AS c FROM t'), [{ c: 1 }]);
    });
  });

  it('commits a transaction; rolls it back when its body throws on this thread', async () => {
    await withTable(async (db) => {
      const got = await db.transaction(async (tx) => {
        await tx.query('INSERT INTO t (id, n) VALUES ($1, $2)', ['kept', 1]);
        await tx.exec(`UPDATE t SET n = n + 1 WHERE id = 'kept'`);
        return (await tx.query('SELECT n FROM t WHERE id = $1', ['kept']))[0]?.n;
      });
      assert.equal(got, 2);
      await assert.rejects(db.transaction(async (tx) => {
        await tx.query('INSERT INTO t (id, n) VALUES ($1, $2)', ['dropped', 1]);
        throw new Error('body failed');
      }), /body failed/);
      // A statement that fails inside makes the body throw: rolled back too, the earlier row with it.
      await assert.rejects(db.transaction(async (tx) => {
        await tx.query('INSERT INTO t (id, n) VALUES ($1, $2)', ['also-dropped', 1]);
        await tx.query('INSERT INTO t (id, n) VALUES ($1, $2)', ['bad', -1]);
      }), (e: unknown) => (e as { code?: string }).code === '23514');
      assert.deepEqual(await db.query('SELECT id, n FROM t ORDER BY id'), [{ id: 'kept', n: 2 }]);
    });
  });

  it('makes other statements wait for an open transaction, then runs them', async () => {
    await withTable(async (db) => {
      let outside: Promise<unknown> | undefined;
      await db.transaction(async (tx) => {
        await tx.query('INSERT INTO t (id, n) VALUES ($1, $2)', ['in-tx', 1]);
        // Sent while the transaction holds PGlite: it runs after the commit, and sees the row.
        outside = db.query('SELECT id FROM t');
        await new Promise((r) => setTimeout(r, 50));
        await tx.query(`UPDATE t SET n = 5 WHERE id = 'in-tx'`);
      });
      assert.deepEqual(await outside, [{ id: 'in-tx' }]);
    });
  });

  it('maps a bad path to SLUICE_ERR_CONFIG across the thread', async () => {
    const base = await mkdtemp(join(tmpdir(), 'sluice-pglite-thread-'));
    try {
      const file = join(base, 'a-file');
      await writeFile(file, 'not a directory');
      await assert.rejects(openPgliteThread(join(file, 'db')), (e) => isSluiceError(e, 'SLUICE_ERR_CONFIG') && e.message.includes(file));
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  it('fails the waiting calls and every later one with SLUICE_ERR_UNAVAILABLE when the thread exits', async () => {
    const db = await openPgliteThread(null, {}, crashWorker);
    try {
      const tx = db.transaction(async (t) => { await t.query("SELECT 'exit'"); });
      // Waits behind the transaction when the thread dies.
      const waiting = db.query('SELECT 1');
      await assert.rejects(tx, (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE') && /exited \(code 7\)/.test(e.message));
      await assert.rejects(waiting, (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE'));
      await assert.rejects(db.query('SELECT 1'), (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE'));
      await assert.rejects(db.transaction(async () => {}), (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE'));
    } finally {
      await db.close();
    }
  });

  it('fails every call with SLUICE_ERR_UNAVAILABLE after an uncaught exception in the thread', async () => {
    const db = await openPgliteThread(null, {}, crashWorker);
    try {
      await assert.rejects(db.query("SELECT 'throw'").then(() => db.query('SELECT pg_sleep(5)')),
        (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE') && e.message.includes('thrown in the store thread'));
      await assert.rejects(db.exec('SELECT 1'), (e) => isSluiceError(e, 'SLUICE_ERR_UNAVAILABLE'));
    } finally {
      await db.close();
    }
  });

  for (const close of [true, false]) {
    it(`does not keep the process alive once idle (${close ? 'closed' : 'left open'})`, async () => {
      const module = fileURLToPath(new URL('../../src/adapters/store/pglite-thread.ts', import.meta.url));
      const script = `import { openPgliteThread } from ${JSON.stringify(module)};
        const db = await openPgliteThread(null);
        const rows = await db.query('SELECT 41 + $1::int AS n', [1]);
        ${close ? 'await db.close();' : ''}
        console.log(JSON.stringify(rows));`;
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
      child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
      // A process held open by the thread would never exit: stop it well after it should have.
      const guard = setTimeout(() => child.kill('SIGKILL'), 40_000);
      const [code, signal] = await new Promise<[number | null, string | null]>((r) => child.once('exit', (c, s) => r([c, s])));
      clearTimeout(guard);
      assert.equal(signal, null, `the process did not end by itself: ${out}`);
      assert.equal(code, 0, out);
      assert.match(out, /\[\{"n":42\}\]/);
    });
  }
});

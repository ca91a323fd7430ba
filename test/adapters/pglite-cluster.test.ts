// The creation of a new PGlite cluster in a child process (pglite-cluster.ts): the first start
// leaves a store that opens and keeps its data, concurrent first starts share one cluster, and a
// failed or interrupted creation leaves nothing a later start would take for a store and is
// reported as opening the store in place reported it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { ClusterCreationError, ensureCluster } from '../../src/adapters/store/pglite-cluster.ts';
import { openPglite, storeOpenError } from '../../src/adapters/store/pglite.ts';
import { isSluiceError } from '../../src/core/errors.ts';

const fake = fileURLToPath(new URL('../helpers/pglite-initdb-fake.mjs', import.meta.url));
const failing = (mode: string) => (dir: string) => [fake, mode, dir];

describe('PGlite cluster creation in a child process', { timeout: 300_000 }, () => {
  let base: string;
  before(async () => { base = await mkdtemp(join(tmpdir(), 'sluice-cluster-')); });
  after(async () => { await rm(base, { recursive: true, force: true }); });

  it('creates a new store in a child: it opens, keeps its data across a reopen, and leaves no staging directory', async () => {
    const dataDir = join(base, 'first', 'db');
    const db = await openPglite(dataDir);
    try {
      await db.exec('CREATE TABLE kept (v text)');
      await db.query('INSERT INTO kept VALUES ($1)', ['there']);
    } finally {
      await db.close();
    }
    assert.deepEqual(await readdir(join(base, 'first')), ['db']);
    const again = await openPglite(dataDir);
    try {
      assert.deepEqual(await again.query('SELECT v FROM kept'), [{ v: 'there' }]);
    } finally {
      await again.close();
    }
  });

  it('loads the build\'s dump of a new cluster when there is one, and runs initdb when it does not load', async () => {
    // A dump with a marker table, so the store shows which way it was made.
    const source = join(base, 'template-source');
    const made = await PGlite.create(source);
    await made.exec('CREATE TABLE made_from_template (v int)');
    const template = join(base, 'cluster.tar.gz');
    await writeFile(template, Buffer.from(await (await made.dumpDataDir('gzip')).arrayBuffer()));
    await made.close();
    const damaged = join(base, 'damaged.tar.gz');
    await writeFile(damaged, 'not a tar file');

    const marker = async (dataDir: string) => {
      const db = await openPglite(dataDir);
      try {
        return (await db.query(`SELECT to_regclass('made_from_template') IS NOT NULL AS present`))[0]?.present;
      } finally {
        await db.close();
      }
    };
    await mkdir(join(base, 'from-template'));
    await ensureCluster(join(base, 'from-template', 'db'), undefined, template);
    assert.equal(await marker(join(base, 'from-template', 'db')), true, 'loaded from the dump');
    assert.deepEqual(await readdir(join(base, 'from-template')), ['db']);

    await mkdir(join(base, 'from-damaged'));
    await ensureCluster(join(base, 'from-damaged', 'db'), undefined, damaged);
    assert.equal(await marker(join(base, 'from-damaged', 'db')), false, 'created by initdb');
    assert.deepEqual(await readdir(join(base, 'from-damaged')), ['db'], 'the failed load left no staging directory');
  });

  it('gives two processes starting on the same new directory at once one cluster', async () => {
    const parent = join(base, 'race');
    await mkdir(parent);
    const dataDir = join(parent, 'db');
    await Promise.all([ensureCluster(dataDir), ensureCluster(dataDir)]);
    assert.deepEqual(await readdir(parent), ['db']);
    const db = await openPglite(dataDir);
    try {
      assert.deepEqual(await db.query('SELECT 1 AS one'), [{ one: 1 }]);
    } finally {
      await db.close();
    }
  });

  it('reports a disk full in the child as the same error as opening in place: the path and ENOSPC, not a configuration error', async () => {
    const parent = join(base, 'full');
    await mkdir(parent);
    const dataDir = join(parent, 'db');
    const err = await ensureCluster(dataDir, failing('enospc')).then(() => assert.fail('created'), (e: unknown) => e);
    assert.ok(err instanceof ClusterCreationError);
    assert.equal(err.fsCode, 'ENOSPC');
    const reported = storeOpenError(dataDir, err);
    assert.ok(reported instanceof Error && !isSluiceError(reported));
    assert.equal(reported.message, `Cannot open the PGlite store in ${dataDir}: file system error ENOSPC`);
    assert.deepEqual(await readdir(parent), [], 'the staging directory is removed');
  });

  it('maps a wrong path reported by the child to SLUICE_ERR_CONFIG naming the path', () => {
    const reported = storeOpenError('/x/db', new ClusterCreationError('denied', 'EACCES'));
    assert.ok(isSluiceError(reported, 'SLUICE_ERR_CONFIG'));
    assert.match(reported.message, /\/x\/db.*EACCES/);
  });

  it('leaves no half-made cluster behind a child that dies, where the next start would take it for a store', async () => {
    const parent = join(base, 'killed');
    await mkdir(parent);
    const dataDir = join(parent, 'db');
    await assert.rejects(ensureCluster(dataDir, failing('partial')), (e: unknown) =>
      e instanceof Error && e.message.includes(parent) && e.message.includes('code 3') && e.message.includes('killed half-way'));
    assert.equal(existsSync(dataDir), false);
    assert.deepEqual(await readdir(parent), []);
  });
});

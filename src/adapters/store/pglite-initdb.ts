// The child process that creates a PGlite cluster (pglite-cluster.ts starts it and waits for it):
// `node pglite-initdb.js DIR [TEMPLATE]`. It opens PGlite on DIR, which runs initdb there (or, given
// TEMPLATE, a dump of a new cluster that the build made, loads it: no initdb, one WebAssembly heap
// instead of three), closes it, reports to its parent over the IPC channel and exits, so the
// creation's memory leaves with the process.
// `node pglite-initdb.js --template OUT` makes that dump (scripts/build.mjs runs it).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { fsErrorCode, startParams } from './pglite-cluster.ts';
import type { CreationReport } from './pglite-cluster.ts';

async function create(dir: string, template: string | undefined): Promise<CreationReport> {
  try {
    const loadDataDir = template === undefined ? undefined : new Blob([await readFile(template)]);
    // The same settings as the gateway's open: the last of initdb's three heaps is that instance.
    const db = await PGlite.create(dir, { startParams: startParams(PGlite.defaultStartParams), ...(loadDataDir && { loadDataDir }) });
    await db.close();
    return { ok: true };
  } catch (e) {
    const fsCode = fsErrorCode(e);
    const message = e instanceof Error ? e.message : fsCode ? `file system error ${fsCode}` : String(e);
    return { ok: false, message, ...(fsCode !== undefined && { fsCode }) };
  }
}

/** A new cluster, dumped (gzip tar) to `out`. */
async function makeTemplate(out: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-pglite-template-'));
  try {
    // The instance that ran initdb dumps its own data directory: no second open.
    const db = await PGlite.create(join(dir, 'db'));
    const dump = await db.dumpDataDir('gzip');
    await db.close();
    await writeFile(out, Buffer.from(await dump.arrayBuffer()));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--template') {
  const out = process.argv[3];
  if (!out) { console.error('usage: pglite-initdb --template OUT'); process.exit(2); }
  await makeTemplate(out);
  process.exit(0);
}

// The gateway gone (killed during its first start), nobody will rename or open the cluster: stop
// at the next turn of the event loop (initdb's WebAssembly runs for seconds without one) rather
// than go on as an orphan. The staging directory stays behind, unread.
process.on('disconnect', () => process.exit(1));

const [dir, template] = process.argv.slice(2);
const report: CreationReport = dir ? await create(dir, template) : { ok: false, message: 'usage: pglite-initdb DIR [TEMPLATE]' };
// Exit once the report is sent: the closed PGlite instance may still hold handles that would keep
// the process alive.
process.send?.(report, () => process.exit(report.ok ? 0 : 1));
if (!process.send) process.exit(2);

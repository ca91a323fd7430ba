// The child process that creates a PGlite cluster (pglite-cluster.ts starts it and waits for it):
// `node pglite-initdb.js DIR`. It opens PGlite on DIR, which runs initdb there, closes it, reports
// to its parent over the IPC channel and exits, so initdb's memory leaves with the process.
import { PGlite } from '@electric-sql/pglite';
import { fsErrorCode, startParams } from './pglite-cluster.ts';
import type { CreationReport } from './pglite-cluster.ts';

async function create(dir: string): Promise<CreationReport> {
  try {
    // The same settings as the gateway's open: the last of initdb's three heaps is that instance.
    const db = await PGlite.create(dir, { startParams: startParams(PGlite.defaultStartParams) });
    await db.close();
    return { ok: true };
  } catch (e) {
    const fsCode = fsErrorCode(e);
    const message = e instanceof Error ? e.message : fsCode ? `file system error ${fsCode}` : String(e);
    return { ok: false, message, ...(fsCode !== undefined && { fsCode }) };
  }
}

// The gateway gone (killed during its first start), nobody will rename or open the cluster: stop
// at the next turn of the event loop (initdb's WebAssembly runs for seconds without one) rather
// than go on as an orphan. The staging directory stays behind, unread.
process.on('disconnect', () => process.exit(1));

const dir = process.argv[2];
const report: CreationReport = dir ? await create(dir) : { ok: false, message: 'usage: pglite-initdb DIR' };
// Exit once the report is sent: the closed PGlite instance may still hold handles that would keep
// the process alive.
process.send?.(report, () => process.exit(report.ok ? 0 : 1));
if (!process.send) process.exit(2);

// A stand-in for pglite-initdb (pglite-cluster.ts's creating child) that fails the way a real one
// can: `node pglite-initdb-fake.mjs MODE DIR`.
//   enospc   reports the disk full, as PGlite's initdb does when a write fails
//   partial  writes part of a cluster (PG_VERSION included) into DIR, then dies without a report
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [mode, dir] = process.argv.slice(2);
if (mode === 'enospc') {
  process.send({ ok: false, fsCode: 'ENOSPC', message: 'file system error ENOSPC' }, () => process.exit(1));
} else if (mode === 'partial') {
  writeFileSync(join(dir, 'PG_VERSION'), '17\n');
  process.stderr.write('killed half-way\n');
  process.exit(3);
} else {
  process.exit(2);
}

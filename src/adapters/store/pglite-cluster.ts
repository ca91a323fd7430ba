// The PGlite cluster on disk: its creation, in a short-lived child process, and the PostgreSQL
// memory settings every PGlite instance of Sluice runs with.
//
// Why a child: on a new data directory PGlite runs initdb, which holds three WebAssembly heaps at
// once (initdb's, a second PGlite's, and the instance being opened). In the gateway that was a
// ~900 MiB peak, still ~850 MiB resident after ready, until V8 collected the dead instances (a
// minute at idle; docs/benchmarks.md §5). The child creates the cluster and exits, taking those heaps with
// it; the gateway then opens a cluster that exists, which costs one heap.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * PostgreSQL settings on top of PGlite's own start parameters. PGlite's postgresql.conf sets
 * shared_buffers to 160 MB, and the WebAssembly heap grows to hold it: an opened store was ~290 MiB
 * resident in a bare Node process, ~170 MiB with these. The store's working set (unfinished
 * requests, recent usage) is small, and a page missing from the buffers is one read from the
 * operating system's page cache (fsync is off in PGlite).
 */
export const MEMORY_SETTINGS: readonly string[] = [
  'shared_buffers=16MB', 'work_mem=1MB', 'maintenance_work_mem=16MB', 'temp_buffers=1MB', 'wal_buffers=1MB',
];

/** PGlite's start parameters with MEMORY_SETTINGS added. */
export function startParams(defaults: readonly string[]): string[] {
  return [...defaults, ...MEMORY_SETTINGS.flatMap((s) => ['-c', s])];
}

/** What the child process reports to its parent (one message, then it exits). */
export type CreationReport = { ok: true } | { ok: false; fsCode?: string; message: string };

/** The child reported that creating the cluster failed; fsCode names a file system error ('ENOSPC',
 *  'EACCES', 'errno 99') when it was one. */
export class ClusterCreationError extends Error {
  override readonly name = 'ClusterCreationError';
  constructor(message: string, readonly fsCode?: string) { super(message); }
}

/** WASI errno values of PGlite's file system errors, named for the common ones. */
const ERRNO: Record<number, string> = { 2: 'EACCES', 20: 'EEXIST', 28: 'EINVAL', 31: 'EISDIR', 44: 'ENOENT', 51: 'ENOSPC', 54: 'ENOTDIR', 55: 'ENOTEMPTY', 63: 'EPERM', 69: 'EROFS' };

/** The code of a file system error: Node's (`code: 'EACCES'`), PGlite's (a bare object carrying a
 *  WASI errno), or the one a creating child reported. */
export function fsErrorCode(e: unknown): string | undefined {
  if (e instanceof ClusterCreationError) return e.fsCode;
  if (e instanceof Error) {
    const { code } = e as NodeJS.ErrnoException;
    return typeof code === 'string' && /^E[A-Z]+$/.test(code) ? code : undefined;
  }
  const errno = (e as { errno?: unknown } | null)?.errno;
  return typeof errno === 'number' ? ERRNO[errno] ?? `errno ${errno}` : undefined;
}

/**
 * Makes sure `dataDir` holds a cluster, creating it in a child process if not. The parent of
 * dataDir must exist. A new directory is created beside it under a temporary name and renamed into
 * place once complete, so a creation cut short (the process killed, the disk full) never leaves a
 * half-made cluster where the next start would take it for a store, and of two processes starting
 * on the same new directory at once, the first rename wins and the other opens its cluster. A
 * directory that exists without a cluster (empty, or not a store at all) is handed to PGlite as it
 * is, as before: PGlite creates the cluster in it, or fails with the reason.
 */
export async function ensureCluster(dataDir: string, child: ChildCommand = initdbChild, template: string | undefined = clusterTemplate()): Promise<void> {
  // PGlite's own test for an existing cluster.
  if (existsSync(join(dataDir, 'PG_VERSION'))) return;
  if (existsSync(dataDir)) return createIn(dataDir, child, undefined);
  try {
    await createBeside(dataDir, child, template);
  } catch (e) {
    // A template that does not load (damaged, or not PGlite's): initdb, as without one.
    if (template === undefined || e instanceof ClusterCreationError && e.fsCode !== undefined) throw e;
    await createBeside(dataDir, child, undefined);
  }
}

/** Creates the cluster in a new directory beside dataDir, then renames it into place. */
async function createBeside(dataDir: string, child: ChildCommand, template: string | undefined): Promise<void> {
  // A creation cut short (this process killed) leaves this directory behind, which nothing reads.
  const staging = await mkdtemp(join(dirname(dataDir), `.${basename(dataDir)}.new-`));
  try {
    await createIn(staging, child, template);
    await rename(staging, dataDir);
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    // Another process created the cluster first: it is the one to open.
    const code = (e as NodeJS.ErrnoException).code;
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && existsSync(join(dataDir, 'PG_VERSION'))) return;
    throw e;
  }
}

/** The arguments of `node` that run a creating child on `dir`, from `template` when given (the tests substitute failing ones). */
export type ChildCommand = (dir: string, template?: string) => string[];

/** pglite-initdb: compiled JavaScript in a build; the TypeScript sources through tsx in development. */
function initdbChild(dir: string, template?: string): string[] {
  const here = import.meta.url;
  const args = template === undefined ? [dir] : [dir, template];
  if (here.endsWith('.ts')) return ['--import', import.meta.resolve('tsx'), fileURLToPath(new URL('./pglite-initdb.ts', here)), ...args];
  return [fileURLToPath(new URL('./pglite-initdb.js', here)), ...args];
}

/**
 * The file name of the dump of a new cluster that the build makes for the installed PGlite
 * (scripts/build.mjs, `pglite-initdb --template`): named by PGlite's version, so that a dump made
 * by another version (node_modules upgraded without a build) is never loaded.
 */
export function clusterTemplateName(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.resolve('@electric-sql/pglite')), 'utf8')) as { version: string };
  return `pglite-cluster-${pkg.version}.tar.gz`;
}

/**
 * The build's dump of a new cluster, if there is one: a first start loads it instead of running
 * initdb (the child then peaks at a third of the memory, and is done sooner). In dist/ beside the
 * compiled code; the sources (development, tests) use dist/'s when a build made one.
 */
function clusterTemplate(): string | undefined {
  try {
    const here = import.meta.url;
    const file = fileURLToPath(new URL(here.endsWith('.ts') ? `../../../dist/${clusterTemplateName()}` : `../../${clusterTemplateName()}`, here));
    return existsSync(file) ? file : undefined;
  } catch {
    return undefined;
  }
}

/** Runs the child on `dir` and waits for it: resolves when it reports the cluster created. */
function createIn(dir: string, command: ChildCommand, template: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, command(dir, template), { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let report: CreationReport | undefined;
    let stderr = '';
    child.on('message', (m: CreationReport) => { report = m; });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr = (stderr + chunk).slice(-2000); });
    child.on('error', reject);
    // 'close', not 'exit': the last of stderr and the report may arrive after the exit.
    child.on('close', (code, signal) => {
      if (report?.ok) return resolve();
      if (report) return reject(new ClusterCreationError(`Creating the PGlite cluster in ${dir} failed: ${report.message}`, report.fsCode));
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      reject(new Error(`The process creating the PGlite cluster in ${dir} ${how}${stderr ? `: ${stderr.trim()}` : ''}`));
    });
  });
}

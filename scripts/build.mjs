// The production build: compiles src/ to JavaScript with tsc (tsconfig.build.json rewrites the
// sources' `.ts` import specifiers to `.js`) and copies every other file under src/ (SQL
// migrations, Lua scripts) beside it, so the compiled modules find them where the sources do.
// Then builds the web console (console/, Vite) into DIR/console, where the gateway serves it from
// (the compiled gateway at DIR/http finds ../console; the sources at src/http find ../../dist/console).
// usage: node scripts/build.mjs [--out-dir DIR]   (default dist; `npm run build`, and `prepare`)
//
// Without TypeScript (an install with --omit=dev), there is nothing to compile with: it says so
// and exits 0, so the install itself does not fail; bin/sluice.mjs then needs a dist/ built earlier.
import { cpSync, readdirSync, rmSync, statSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { 'out-dir': { type: 'string', default: 'dist' } } });
const outDir = resolve(root, values['out-dir']);
if (outDir === root || relative(root, outDir).startsWith('..') || outDir === join(root, 'src')) {
  console.error(`build: --out-dir must be a directory inside the repository other than src/ (got ${outDir})`);
  process.exit(2);
}

let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  console.warn('build: TypeScript is not installed (an install without dev dependencies?): skipping the build; '
    + `${relative(root, outDir)}/ is left as it is`);
  process.exit(0);
}

rmSync(outDir, { recursive: true, force: true });
const compiled = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', outDir], { stdio: 'inherit' });
if (compiled.status !== 0) {
  console.error(`build: tsc failed (exit ${compiled.status ?? compiled.signal})`);
  process.exit(1);
}

/** Every file under dir that tsc does not compile, as paths relative to dir. */
function assets(dir, base = dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return assets(path, base);
    return name.endsWith('.ts') ? [] : [relative(base, path)];
  });
}
const src = join(root, 'src');
const copied = assets(src);
for (const file of copied) cpSync(join(src, file), join(outDir, file));
console.log(`build: compiled src/ to ${relative(root, outDir)}/ and copied ${copied.length} asset files`);

// A dump of a new, empty PGlite cluster: a first start of the embedded store loads it instead of
// running initdb (docs/operations.md, "embedded store"). Named by PGlite's version, so a start with
// another version installed ignores it. Without it a first start runs initdb, as before: a failure
// here is a warning, not a failed build.
{
  const started = Date.now();
  const { clusterTemplateName } = await import(pathToFileURL(join(outDir, 'adapters', 'store', 'pglite-cluster.js')).href);
  const template = join(outDir, clusterTemplateName());
  const made = spawnSync(process.execPath, [join(outDir, 'adapters', 'store', 'pglite-initdb.js'), '--template', template], { stdio: 'inherit' });
  if (made.status === 0) console.log(`build: made ${relative(root, template)} (a new store's cluster) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  else console.warn(`build: could not make the PGlite cluster dump (exit ${made.status ?? made.signal}); a first start will run initdb`);
}

// The web console: a Vite build of console/ (its config names the entry, base path and output).
let vite;
try {
  vite = await import(pathToFileURL(createRequire(join(root, 'package.json')).resolve('vite')).href);
} catch {
  console.warn(`build: Vite is not installed (an install without dev dependencies?): the console is not built; ${relative(root, outDir)}/console is left out`);
  process.exit(0);
}
const consoleOut = join(outDir, 'console');
const started = Date.now();
await vite.build({ configFile: join(root, 'console', 'vite.config.ts'), logLevel: 'warn', build: { outDir: consoleOut, emptyOutDir: true } });
console.log(`build: built the web console into ${relative(root, consoleOut)}/ in ${((Date.now() - started) / 1000).toFixed(1)} s`);

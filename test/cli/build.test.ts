// The production build: `node scripts/build.mjs` compiles src/ into a fresh directory, the compiled
// CLI starts with plain `node` (no tsx) and streams a reply, and nothing it imports is a
// development dependency (an image installs with `npm ci --omit=dev`).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { clusterTemplateName } from '../../src/adapters/store/pglite-cluster.ts';
import { MASTER_KEY, api, readSse } from '../helpers/app.ts';
import { spawnSluice, type SluiceProcess } from '../helpers/process.ts';

const run = promisify(execFile);
// Inside the repository, as dist/ is: the compiled modules resolve node_modules and package.json from there.
const OUT = `.build-test-${process.pid}`;

function jsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return jsFiles(path);
    return name.endsWith('.js') ? [path] : [];
  });
}

/** Every module specifier of a compiled file: static imports and exports, and literal dynamic imports. */
function specifiers(source: string): string[] {
  const found: string[] = [];
  for (const m of source.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"`;]*?from\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)) {
    found.push((m[1] ?? m[2] ?? m[3])!);
  }
  return found;
}

/** 'pg' → 'pg', '@nats-io/jetstream/lib' → '@nats-io/jetstream'. */
const packageOf = (spec: string) => spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');

describe('production build (dist)', () => {
  let proc: SluiceProcess | undefined;
  let dataDir: string;
  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'sluice-build-'));
    await run(process.execPath, ['scripts/build.mjs', '--out-dir', OUT], { timeout: 300_000 });
  });
  after(async () => {
    await proc?.kill();
    rmSync(OUT, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('copies the SQL migrations and Lua scripts beside the compiled modules', () => {
    for (const dir of ['adapters/store/migrations', 'adapters/limiter/lua', 'adapters/bus/lua']) {
      const want = readdirSync(join('src', dir)).sort();
      assert.ok(want.length > 0, dir);
      assert.deepEqual(readdirSync(join(OUT, dir)).sort(), want, dir);
    }
  });

  it('makes a dump of a new PGlite cluster for the installed version, which a first start loads instead of running initdb', () => {
    const dump = join(OUT, clusterTemplateName());
    assert.ok(existsSync(dump), `${dump} is missing`);
    // A gzip tar of a whole cluster (a few MB), not an empty or partial file.
    const bytes = readFileSync(dump);
    assert.deepEqual([...bytes.subarray(0, 2)], [0x1f, 0x8b], 'gzip');
    assert.ok(bytes.length > 1_000_000, `${bytes.length} bytes`);
  });

  it('imports only runtime dependencies and Node built-ins, and no .ts file', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> };
    const runtime = new Set(Object.keys(pkg.dependencies));
    const builtins = new Set(builtinModules);
    // The console's bundle runs in the browser with its libraries inside: it imports nothing.
    const files = jsFiles(OUT).filter((f) => !f.startsWith(join(OUT, 'console')));
    assert.ok(files.some((f) => f.endsWith(join('cli', 'main.js'))));
    const wrong: string[] = [];
    for (const file of files) {
      for (const spec of specifiers(readFileSync(file, 'utf8'))) {
        if (spec.startsWith('.')) { if (!spec.endsWith('.js')) wrong.push(`${file}: ${spec} (relative, not .js)`); continue; }
        if (spec.startsWith('node:') || builtins.has(spec)) continue;
        if (!runtime.has(packageOf(spec))) wrong.push(`${file}: ${spec} (not in dependencies)`);
      }
    }
    assert.deepEqual(wrong, []);
    assert.ok(!runtime.has('tsx') && !runtime.has('typescript'), 'tsx and typescript are development dependencies');
  });

  it('`node <build>/cli/main.js start` serves a streamed reply', async () => {
    proc = await spawnSluice(['start'], {
      SLUICE_DEV: '', SLUICE_DATA_DIR: dataDir, DATABASE_URL: 'pglite://memory', SLUICE_MASTER_KEY: MASTER_KEY,
      SIM_TTFT_MS: '0', SIM_ITL_MS: '1',
    }, { entry: join(OUT, 'cli', 'main.js') });
    const frames = await readSse(await api(proc.url)('/chat', { method: 'POST', json: { message: 'hello build', max_tokens: 6 } }));
    assert.equal(frames.filter((f) => f.event === 'token').length, 6);
    assert.equal(frames.at(-1)!.event, 'completed');
    assert.match(proc.output(), /Sluice all started/);
    // The web console, built beside the modules, is served by the compiled gateway, and the banner names it.
    assert.match(proc.output(), new RegExp(`console    ${proc.url.replace(/[.]/g, '\\.')}/console/`));
    const page = await fetch(`${proc.url}/console/`);
    assert.equal(page.status, 200);
    const html = await page.text();
    const script = /src="(\/console\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(script, html);
    assert.equal((await fetch(proc.url + script)).status, 200);
  });

  it('builds the web console into <out>/console: an index.html and its hashed assets', () => {
    const index = readFileSync(join(OUT, 'console', 'index.html'), 'utf8');
    const assets = readdirSync(join(OUT, 'console', 'assets'));
    assert.ok(assets.some((a) => /^index-[\w-]{8,}\.js$/.test(a)) && assets.some((a) => /\.css$/.test(a)), assets.join(', '));
    for (const a of assets) assert.ok(index.includes(`/console/assets/${a}`), `${a} is named by index.html`);
  });

  it('the build leaves no output where it was not asked to', () => {
    assert.ok(existsSync(join(OUT, 'cli', 'main.js')));
    assert.ok(!existsSync(join(OUT, 'src')), 'rootDir is src: no nested src/ in the output');
  });
});

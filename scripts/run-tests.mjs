// Runs every test/**/*.test.ts file with node's test runner (Node 20 has no --test glob).
// usage: node scripts/run-tests.mjs [filter substring ...]
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return find(path);
    return name.endsWith('.test.ts') ? [path] : [];
  });
}
const filters = process.argv.slice(2);
const files = find('test').filter((f) => filters.length === 0 || filters.some((s) => f.includes(s))).sort();
if (files.length === 0) { console.error('no test files matched'); process.exit(1); }
// SLUICE_DEV=1: every `sluice` process a test starts runs the sources under test, never a dist/ build.
const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-reporter=spec', ...files], { stdio: 'inherit', env: { ...process.env, SLUICE_DEV: '1' } });
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

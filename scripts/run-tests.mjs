// Runs every test/**/*.test.ts file with node's test runner (Node 20 has no --test glob).
// usage: node scripts/run-tests.mjs [filter substring ...]
//
// Two files run at once. A file that disturbs a service every other test shares (it restarts the
// machine's RabbitMQ, say) carries the line `// sluice-test: exclusive` and runs afterwards, alone,
// so no other test sees that service go away under it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
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
const exclusive = (f) => /^\/\/ sluice-test: exclusive\b/m.test(readFileSync(f, 'utf8'));
const alone = files.filter(exclusive);
const shared = files.filter((f) => !alone.includes(f));

// SLUICE_DEV=1: every `sluice` process a test starts runs the sources under test, never a dist/ build.
function runNodeTest(list, concurrency) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...list], { stdio: 'inherit', env: { ...process.env, SLUICE_DEV: '1' } });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

// Both phases always run (a failure in the first still reports the second), and either fails the run.
const codes = [];
if (shared.length > 0) codes.push(await runNodeTest(shared, 2));
if (alone.length > 0) {
  console.log(`\nrunning ${alone.length} file(s) alone, as they restart a shared service: ${alone.join(', ')}`);
  codes.push(await runNodeTest(alone, 1));
}
process.exit(codes.find((c) => c !== 0) ?? 0);

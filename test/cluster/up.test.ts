// `sluice up`: refuses an unshareable configuration, runs a deployment whose gateways serve
// requests run by its workers, and stops every child on SIGTERM.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { MASTER_KEY, waitFor } from '../helpers/app.ts';
import { client, createCluster, type Cluster } from '../helpers/cluster.ts';
import { freePortRun } from '../helpers/process.ts';
import { serviceSuite } from '../helpers/services.ts';

const run = promisify(execFile);
const suite = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')), ...(await serviceSuite('rabbitmq')) };

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

describe('sluice up', () => {
  it('refuses an in-memory queue', async () => {
    const err = await run(process.execPath, ['bin/sluice.mjs', 'up'], { env: { ...process.env, QUEUE_URL: 'memory://' } }).then(() => null, (e: { code: number; stderr: string }) => e);
    assert.ok(err, 'exits non-zero');
    assert.equal(err.code, 2);
    assert.match(err.stderr, /QUEUE_URL is memory:\/\//);
  });

  describe('with real services', suite, () => {
    let cluster: Cluster;
    let up: ChildProcess | undefined;
    after(async () => {
      // SIGTERM, so `up` stops its children: a SIGKILLed `up` would leave them running.
      if (up && up.exitCode === null && up.signalCode === null) {
        const exited = new Promise((r) => up!.once('exit', r));
        up.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
        up.kill('SIGKILL');
      }
      await cluster?.cleanup();
    });

    it('starts gateways, workers and a ledger, serves, and stops them all on SIGTERM', async () => {
      cluster = await createCluster({ queue: 'amqp', bus: 'redis' });
      // Four children on four consecutive ports.
      const port = await freePortRun(4);
      up = spawn(process.execPath, ['bin/sluice.mjs', 'up', '--gateways', '2', '--workers', '1', '--port', String(port), '--stop-timeout-ms', '5000'], {
        env: { ...process.env, ...cluster.env }, stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      up.stdout!.on('data', (c) => { out += c; });
      up.stderr!.on('data', (c) => { out += c; });
      await waitFor(async () => { if (up!.exitCode !== null) throw new Error(out); return /^ledger\s+ledger\s+\d+/m.test(out); }, 90_000, 100)
        .catch((e: unknown) => { throw new Error(`${String(e)}\n${out}`); });
      const table = out.slice(out.indexOf('NAME'));
      const pids = [...table.matchAll(/^(gateway-\d|worker-\d|ledger)\s+\w+\s+(\d+)/gm)].map((m) => [m[1]!, Number(m[2])] as const);
      assert.deepEqual(pids.map(([name]) => name), ['gateway-1', 'gateway-2', 'worker-1', 'ledger']);
      assert.match(table, new RegExp(`gateway-2\\s+gateway\\s+\\d+\\s+http://127\\.0\\.0\\.1:${port + 1}/v1\\s+ready`));
      assert.match(table, new RegExp(`ledger\\s+ledger\\s+\\d+\\s+http://127\\.0\\.0\\.1:${port + 3}/metrics\\s+ready`));
      assert.equal((await fetch(`http://127.0.0.1:${port + 2}/healthz`)).status, 200, 'the worker serves its probes on the next port');
      assert.match(out, /^\[worker-1\] Sluice worker started/m, 'child output is prefixed with its name');

      const res = await client(`http://127.0.0.1:${port + 1}`, MASTER_KEY).post('/v1/chat/completions', { model: 'sim', max_tokens: 3, messages: [{ role: 'user', content: 'hi' }] });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 3);

      const exited = new Promise<number | null>((r) => up!.once('exit', (code) => r(code)));
      up.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.deepEqual(pids.filter(([, pid]) => alive(pid)), [], 'every child stopped');
    });
  });
});

describe('sluice up after a SIGKILL', suite, () => {
  let cluster: Cluster;
  after(() => cluster?.cleanup());

  it('its children notice the parent is gone and stop', async () => {
    cluster = await createCluster({ queue: 'amqp', bus: 'redis' });
    const port = await freePortRun(2);
    const up = spawn(process.execPath, ['bin/sluice.mjs', 'up', '--gateways', '1', '--workers', '1', '--no-ledger', '--port', String(port)], {
      env: { ...process.env, ...cluster.env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    up.stdout!.on('data', (c) => { out += c; });
    up.stderr!.on('data', (c) => { out += c; });
    await waitFor(async () => { if (up.exitCode !== null) throw new Error(out); return /^worker-1\s+worker\s+\d+/m.test(out); }, 90_000, 100);
    const pids = [...out.slice(out.indexOf('NAME')).matchAll(/^(?:gateway-\d|worker-\d)\s+\w+\s+(\d+)/gm)].map((m) => Number(m[1]));
    assert.equal(pids.length, 2);
    up.kill('SIGKILL');
    await waitFor(async () => pids.every((pid) => !alive(pid)), 20_000, 100);
  });
});

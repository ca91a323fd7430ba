// Start-up errors an operator meets first, on real `sluice start` processes: a bad URL scheme and
// a port in use stop the start before anything opens; an unreachable PostgreSQL, Redis or broker
// is named (setting, host:port, cause) within a bounded time; a missing database or role is a
// configuration error naming it; a good start prints its progress with passwords redacted.
//
// The time bounds are generous ceilings for a loaded CI machine (a process start under tsx takes
// ~1.5 s here), not speed checks: what they catch is a start that waits on retries or hangs.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MASTER_KEY, api, readSse } from '../helpers/app.ts';
import { freePort, spawnSluice, type SluiceProcess } from '../helpers/process.ts';
import { SERVICES, isolatedNames, removeIsolated, serviceSuite, uniqueName } from '../helpers/services.ts';

interface Failure { code: number | null; output: string; ms: number }

/** Starts `sluice start` with env and waits for it to exit (it must: these configurations fail). */
async function failedStart(env: Record<string, string>, opts: { port?: number } = {}): Promise<Failure> {
  const started = Date.now();
  const proc = await spawnSluice(['start'], { DATABASE_URL: 'pglite://memory', SLUICE_MASTER_KEY: MASTER_KEY, ...env }, { waitPath: null, ...opts });
  const code = await new Promise<number | null>((resolve) => {
    const limit = setTimeout(() => { proc.child.kill('SIGKILL'); }, 60_000);
    proc.child.once('exit', (c) => { clearTimeout(limit); resolve(c); });
  });
  return { code, output: proc.output(), ms: Date.now() - started };
}

/** A TCP server that accepts connections and never says a word: a hung service. */
async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => { sockets.add(s); s.on('error', () => {}); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return { port, close: () => new Promise((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }) };
}

describe('start-up: checked before anything opens', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'sluice-startup-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const cases: Array<[string, string, RegExp]> = [
    ['DATABASE_URL', 'mysql://db:3306/sluice', /pglite:\/\/, postgres:\/\/, postgresql:\/\//],
    ['LIMITER_URL', 'memcached://cache:11211', /memory:\/\/, redis:\/\/, rediss:\/\//],
    ['QUEUE_URL', 'kafka://broker:9092', /memory:\/\/, amqp:\/\/, amqps:\/\/, nats:\/\//],
    ['BUS_URL', 'redis-cluster://r:6379', /memory:\/\/, redis:\/\/, rediss:\/\/, nats:\/\//],
    ['MODEL_URL', 'ftp://model:21/v1', /sim:\/\/, http:\/\/, https:\/\//],
  ];
  for (const [field, url, accepted] of cases) {
    it(`a ${field} with an unsupported scheme is SLUICE_ERR_CONFIG naming it and the accepted schemes, before the store opens`, async () => {
      const store = join(dir, field);
      const r = await failedStart({ [field]: url, ...(field !== 'DATABASE_URL' && { DATABASE_URL: `pglite://${store}` }) });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`error: SLUICE_ERR_CONFIG: ${field}=${url.replace(/[/.]/g, '\\$&')}: scheme "[^"]+:" is not supported`));
      assert.match(r.output, accepted);
      assert.doesNotMatch(r.output, /store: opening/, 'nothing opened');
      assert.ok(!existsSync(store), 'no store created');
      assert.ok(r.ms < 5_000, `took ${r.ms} ms`);
    });
  }

  it('a URL that does not parse (a port that is not a number) is SLUICE_ERR_CONFIG naming the setting, without its password', async () => {
    const r = await failedStart({ QUEUE_URL: 'amqp://sluice:s3cret@rabbit:56x72' });
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, /error: SLUICE_ERR_CONFIG: QUEUE_URL=amqp:\/\/sluice:\*\*\*@rabbit:56x72 is not a valid URL/);
    assert.doesNotMatch(r.output, /s3cret|store: opening/);
  });

  it('a port in use fails within seconds, naming the address, before the store opens or the worker starts', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const port = (holder.address() as net.AddressInfo).port;
    try {
      const r = await failedStart({ LOG_LEVEL: 'info' }, { port });
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`error: SLUICE_ERR_CONFIG: 127\\.0\\.0\\.1:${port} is already in use \\(EADDRINUSE\\).*set PORT`));
      assert.doesNotMatch(r.output, /store: opening|worker consuming/);
      assert.ok(r.ms < 5_000, `took ${r.ms} ms`);
    } finally {
      holder.close();
    }
  });
});

describe('start-up: services that cannot be reached', () => {
  it('PostgreSQL on a closed port: SLUICE_ERR_UNAVAILABLE naming DATABASE_URL, host:port and ECONNREFUSED', async () => {
    const r = await failedStart({ DATABASE_URL: 'postgres://sluice:s3cret@127.0.0.1:1/sluice' });
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, /error: SLUICE_ERR_UNAVAILABLE: store: cannot connect to 127\.0\.0\.1:1 \(DATABASE_URL=postgres:\/\/sluice:\*\*\*@127\.0\.0\.1:1\/sluice\): connection refused \(ECONNREFUSED\)/);
    assert.doesNotMatch(r.output, /s3cret/);
    assert.ok(r.ms < 15_000, `took ${r.ms} ms`);
  });

  it('a Redis bus on a closed port: SLUICE_ERR_UNAVAILABLE naming BUS_URL, host:port and ECONNREFUSED', async () => {
    const port = await freePort();
    const r = await failedStart({ BUS_URL: `redis://127.0.0.1:${port}` });
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, new RegExp(`error: SLUICE_ERR_UNAVAILABLE: bus: cannot connect to 127\\.0\\.0\\.1:${port} \\(BUS_URL=redis://127\\.0\\.0\\.1:${port}\\): connection refused \\(ECONNREFUSED\\)`));
    assert.ok(r.ms < 15_000, `took ${r.ms} ms`);
  });

  for (const [field, scheme, service] of [['BUS_URL', 'redis', 'bus'], ['QUEUE_URL', 'amqp', 'queue'], ['QUEUE_URL', 'nats', 'queue'], ['DATABASE_URL', 'postgres', 'store']] as const) {
    it(`a ${scheme} server that accepts and never answers (${field}) fails after SLUICE_CONNECT_TIMEOUT_MS, naming the host`, async () => {
      const silent = await silentServer();
      try {
        const r = await failedStart({ [field]: `${scheme}://127.0.0.1:${silent.port}${scheme === 'postgres' ? '/sluice' : ''}`, SLUICE_CONNECT_TIMEOUT_MS: '1000' });
        assert.equal(r.code, 1, r.output);
        assert.match(r.output, new RegExp(`error: SLUICE_ERR_UNAVAILABLE: ${service}: cannot connect to 127\\.0\\.0\\.1:${silent.port} \\(${field}=.*\\): no answer within`));
        assert.ok(r.ms < 15_000, `took ${r.ms} ms`);
      } finally {
        await silent.close();
      }
    });
  }
});

describe('start-up: PostgreSQL refuses the database or the role', await serviceSuite('postgres'), () => {
  const pg = new URL(SERVICES.postgres);
  const at = (user: string, db: string) => `postgres://${user}@${pg.host}/${db}`;

  it('a database that does not exist is SLUICE_ERR_CONFIG naming it', async () => {
    const db = uniqueName('sluice_missing');
    const r = await failedStart({ DATABASE_URL: at(pg.username || 'postgres', db) });
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, new RegExp(`error: SLUICE_ERR_CONFIG: store: PostgreSQL at ${pg.host.replace(/\./g, '\\.')} .*database "${db}" does not exist\\. Create the database`));
  });

  it('a role that does not exist is SLUICE_ERR_CONFIG naming it', async () => {
    const role = uniqueName('nobody');
    const r = await failedStart({ DATABASE_URL: at(role, pg.pathname.slice(1)) });
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, new RegExp(`error: SLUICE_ERR_CONFIG: store: PostgreSQL at .*role "${role}" does not exist\\. Create the role`));
  });
});

describe('start-up: progress on a distributed configuration', await serviceSuite('rabbitmq'), async () => {
  const redis = await serviceSuite('redis');
  const names = isolatedNames(uniqueName('sluice_progress'));
  let proc: SluiceProcess | undefined;
  after(async () => { await proc?.kill(); await removeIsolated(names, { queue: 'amqp', bus: 'redis' }); });

  it('prints what it opens, with the broker password redacted, then serves', { skip: redis.skip }, async () => {
    const amqp = new URL(SERVICES.rabbitmq);
    assert.ok(amqp.password, 'the test broker URL has a password to redact');
    proc = await spawnSluice(['start'], {
      ...names, DATABASE_URL: 'pglite://memory', QUEUE_URL: SERVICES.rabbitmq, BUS_URL: SERVICES.redis,
      SLUICE_MASTER_KEY: MASTER_KEY, SIM_TTFT_MS: '0', SIM_ITL_MS: '1',
    });
    const out = proc.output();
    for (const line of ['store: opening pglite://memory', 'store: migrating…', 'store: applied 001_init', 'limiter: in-process (memory://)',
      `queue: connected (amqp://${amqp.username}:***@${amqp.host}`, `bus: connected (${SERVICES.redis}`, 'model: simulated (sim://)', 'Sluice all started']) {
      assert.ok(out.includes(line), `missing "${line}" in:\n${out}`);
    }
    assert.ok(!out.includes(`:${amqp.password}@`), 'the password is not printed');
    const frames = await readSse(await api(proc.url)('/chat', { method: 'POST', json: { message: 'hi', max_tokens: 3 } }));
    assert.equal(frames.filter((f) => f.event === 'token').length, 3);
  });
});

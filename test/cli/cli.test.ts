// The command line: --help on every command (without side effects), --version, `migrate
// --dry-run`, `sluice sim-model` as a standalone upstream selected with MODEL_URL, and `sluice
// chat` printing tokens and the time to first token.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { MASTER_KEY, api, readSse, startTestSluice, type TestSluice } from '../helpers/app.ts';
import { freePort, spawnSluice, type SluiceProcess } from '../helpers/process.ts';
import { createDatabase, dropDatabase, pgClient, serviceSuite, uniqueName } from '../helpers/services.ts';

const run = promisify(execFile);

describe('CLI help and version', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'sluice-help-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  // Every command with a real configuration behind it: were it run instead of its help, the data
  // dir would get a store and a key, and the port would be taken.
  const env = () => ({ ...process.env, SLUICE_DATA_DIR: dir, DATABASE_URL: `pglite://${join(dir, 'db')}`, PORT: '1' });
  const commands: Array<[string[], RegExp]> = [
    [['start'], /^Usage: sluice start /], [['up'], /^Usage: sluice up /], [['sim-model'], /^Usage: sluice sim-model /],
    [['chat'], /^Usage: sluice chat /], [['migrate'], /^Usage: sluice migrate /], [['admin'], /^Admin commands/],
    [['users'], /^Admin commands/], [['keys', 'create'], /^Admin commands/], [['quotas'], /^Admin commands/],
    [['tiers'], /^Admin commands/], [['usage', 'export'], /^Admin commands/],
  ];
  for (const [command, usage] of commands) {
    it(`${command.join(' ')} --help prints its usage, exits 0 and does nothing else`, async () => {
      for (const flag of ['--help', '-h']) {
        const { stdout, stderr } = await run(process.execPath, ['bin/sluice.mjs', ...command, flag, '--port', '1'], { env: env() });
        assert.match(stdout, usage);
        assert.equal(stderr, '');
      }
      assert.deepEqual(readdirSync(dir), [], 'no store, no key file');
    });
  }

  it('--help, -h, help and help COMMAND', async () => {
    for (const args of [['--help'], ['-h'], ['help'], []]) {
      const { stdout } = await run(process.execPath, ['bin/sluice.mjs', ...args]);
      for (const c of ['start', 'sim-model', 'chat', 'migrate', '--dry-run', '--role', '--version']) assert.ok(stdout.includes(c), `${args.join(' ')}: ${c}`);
    }
    assert.match((await run(process.execPath, ['bin/sluice.mjs', 'help', 'migrate'])).stdout, /^Usage: sluice migrate \[--dry-run\]/);
    await assert.rejects(run(process.execPath, ['bin/sluice.mjs', 'help', 'nope']), (e: { code: number }) => e.code === 2);
  });

  it('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    for (const flag of ['--version', '-v']) {
      assert.equal((await run(process.execPath, ['bin/sluice.mjs', flag])).stdout, `sluice ${version}\n`);
    }
  });

  it('an unknown flag exits 2 with the command\'s usage, having done nothing', async () => {
    await assert.rejects(run(process.execPath, ['bin/sluice.mjs', 'start', '--bogus'], { env: env() }),
      (e: { code: number; stderr: string }) => e.code === 2 && e.stderr.includes("Unknown option '--bogus'") && e.stderr.includes('Usage: sluice start'));
    assert.deepEqual(readdirSync(dir), []);
  });
});

describe('sluice migrate --dry-run', await serviceSuite('postgres'), () => {
  const name = uniqueName('sluice_cli_migrate');
  let url: string;
  before(async () => { url = await createDatabase(name); });
  after(() => dropDatabase(name));

  const migrations = readdirSync('src/adapters/store/migrations').filter((f) => f.endsWith('.sql')).map((f) => f.replace(/\.sql$/, '')).sort();
  const sluice = (...args: string[]) => run(process.execPath, ['bin/sluice.mjs', ...args], { env: { ...process.env, DATABASE_URL: url } });
  const hasSchema = async () => {
    const c = await pgClient(url);
    try { return (await c.query(`SELECT to_regclass('schema_migrations') IS NOT NULL AS present`)).rows[0].present === true; } finally { await c.end(); }
  };

  it('lists the pending migrations without applying them; migrate applies them; then none is pending', async () => {
    const dry = await sluice('migrate', '--dry-run');
    for (const m of migrations) assert.ok(dry.stdout.includes(`  ${m}\n`), dry.stdout);
    assert.match(dry.stdout, new RegExp(`${migrations.length} pending migration\\(s\\), not applied`));
    assert.equal(await hasSchema(), false, 'the dry run created nothing');
    assert.match((await sluice('migrate')).stdout, new RegExp(`migrations applied to .*: ${migrations.join(', ')}`));
    assert.equal(await hasSchema(), true);
    assert.match((await sluice('migrate', '--dry-run')).stdout, /up to date, no pending migration/);
    assert.match((await sluice('migrate')).stdout, /up to date, no migration applied/);
  });
});

describe('CLI', () => {
  let simModel: SluiceProcess;
  let app: TestSluice;
  before(async () => {
    // sim-model takes its port from --port; the helper waits on that port for /v1/models.
    const port = await freePort();
    simModel = await spawnSluice(['sim-model', '--port', String(port), '--ttft-ms', '0', '--itl-ms', '1'], {}, { port, waitPath: '/v1/models' });
    app = await startTestSluice({ modelUrl: `${simModel.url}/v1` });
  });
  after(async () => { await app.stop(); await simModel.kill(); });

  it('an unknown command exits 2 with the help', async () => {
    await assert.rejects(run(process.execPath, ['bin/sluice.mjs', 'frobnicate']), (e: { code: number; stderr: string }) => e.code === 2 && e.stderr.includes('unknown command'));
  });

  it('MODEL_URL points Sluice at an OpenAI-compatible server (sluice sim-model)', async () => {
    const client = new OpenAI({ baseURL: `${app.url}/v1`, apiKey: MASTER_KEY, maxRetries: 0 });
    for (const mode of ['direct', 'queued']) {
      const r = await client.chat.completions.create({ model: 'sim', max_tokens: 9, messages: [{ role: 'user', content: 'hello upstream' }] }, { headers: { 'x-sluice-mode': mode } });
      assert.equal(r.usage!.completion_tokens, 9);
      assert.ok(r.choices[0]!.message.content!.length > 0);
    }
    const frames = await readSse(await api(app.url)('/chat', { method: 'POST', json: { message: 'hi', max_tokens: 4 } }));
    assert.equal(frames.filter((f) => f.event === 'token').length, 4);
  });

  it('sluice chat prints tokens as they arrive and the time to first token', async () => {
    const { stdout, stderr } = await run(process.execPath, ['bin/sluice.mjs', 'chat', 'Tell me a story', '--url', app.url, '--key', MASTER_KEY, '--max-tokens', '12']);
    assert.ok(stdout.trim().split(/\s+/).length >= 5, `printed text: ${stdout}`);
    assert.match(stderr, /time to first token \d+ ms, 12 tokens/);
  });

  it('sluice chat without a reachable server says so and exits 1', async () => {
    await assert.rejects(run(process.execPath, ['bin/sluice.mjs', 'chat', 'x', '--url', 'http://127.0.0.1:1', '--key', 'k']), (e: { code: number; stderr: string }) => e.code === 1 && e.stderr.includes('cannot reach'));
  });

  it('admin commands: users create, keys create (shown once), quotas set', async () => {
    const base = ['bin/sluice.mjs', '--url', app.url, '--key', MASTER_KEY];
    const cmd = (...a: string[]) => run(process.execPath, [base[0]!, ...a, ...base.slice(1)]);
    const user = JSON.parse((await cmd('users', 'create', '--id', 'cli-user', '--tier', 'free')).stdout);
    assert.equal(user.tier, 'free');
    const { stdout: key } = await cmd('keys', 'create', '--user', 'cli-user');
    assert.match(key.trim(), /^sk-sluice-/);
    const q = JSON.parse((await cmd('quotas', 'set', 'cli-user', '--tokens-per-day', '5000')).stdout);
    assert.equal(q.effective.tokensPerDay, 5000);
    assert.equal((await api(app.url, key.trim())('/v1/models')).status, 200);
    await assert.rejects(cmd('users', 'create', '--id', 'x', '--tier', 'nope'), (e: { stderr: string }) => e.stderr.includes('SLUICE_ERR_UNKNOWN_TIER'));
  });

  it('keys create --models gives the key its own model list', async () => {
    const base = ['bin/sluice.mjs', '--url', app.url, '--key', MASTER_KEY];
    const cmd = (...a: string[]) => run(process.execPath, [base[0]!, ...a, ...base.slice(1)]);
    await cmd('users', 'create', '--id', 'cli-models', '--tier', 'pro');
    const { stdout: key } = await cmd('keys', 'create', '--user', 'cli-models', '--models', 'sim, other');
    const models = (await (await api(app.url, key.trim())('/v1/models')).json()) as { data: { id: string }[] };
    assert.deepEqual(models.data.map((m) => m.id), ['sim']);
    const listed = JSON.parse((await cmd('keys', 'list', '--user', 'cli-models')).stdout) as { data: { models: string[] }[] };
    assert.deepEqual(listed.data[0]?.models, ['sim', 'other']);
    await assert.rejects(cmd('keys', 'create', '--user', 'cli-models', '--models', ','), (e: { stderr: string }) => e.stderr.includes('--models'));
  });

  it('keys create --inspection gives the key its own content-inspection mode', async () => {
    const base = ['bin/sluice.mjs', '--url', app.url, '--key', MASTER_KEY];
    const cmd = (...a: string[]) => run(process.execPath, [base[0]!, ...a, ...base.slice(1)]);
    await cmd('users', 'create', '--id', 'cli-inspect', '--tier', 'pro');
    await cmd('keys', 'create', '--user', 'cli-inspect', '--inspection', 'inline');
    const listed = JSON.parse((await cmd('keys', 'list', '--user', 'cli-inspect')).stdout) as { data: { inspection_mode: string | null }[] };
    assert.equal(listed.data[0]?.inspection_mode, 'inline');
    await assert.rejects(cmd('keys', 'create', '--user', 'cli-inspect', '--inspection', 'sometimes'), (e: { stderr: string }) => e.stderr.includes('SLUICE_ERR_VALIDATION'));
  });
});

describe('SSE keepalive', () => {
  let app: TestSluice;
  before(async () => { app = await startTestSluice({ sse: { pingMs: 50, retryMs: 3000, maxBufferedBytes: 1 << 20 }, sim: { ttftMs: 300, itlMs: 1 } }); });
  after(() => app.stop());

  it('sends `: ping` comments on the configured interval while waiting', async () => {
    const frames = await readSse(await api(app.url)('/chat', { method: 'POST', json: { message: 'wait for it', max_tokens: 2 } }));
    assert.ok(frames.filter((f) => f.comment === 'ping').length >= 3, 'pings while the model thinks');
    assert.equal(frames.at(-1)!.event, 'completed');
  });
});

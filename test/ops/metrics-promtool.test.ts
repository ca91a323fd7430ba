// /metrics passes `promtool check metrics` (names, types, suffixes, help) after enough traffic that
// every metric family has samples: a family without samples would escape some of the checks.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { api, createUserKey, readSse, startTestSluice, type TestSluice } from '../helpers/app.ts';
import { promtool, promtoolSuite } from '../helpers/promtool.ts';

/** Family name -> type, from the exposition's `# TYPE` lines. */
function families(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1]!, m[2]!);
  return out;
}

/** Sample names present (the part before `{` or the value). */
function sampleNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) if (line && !line.startsWith('#')) out.add(line.split(/[{ ]/, 1)[0]!);
  return out;
}

/** prom-client's per-type count of libuv requests in flight (fs, dns): empty whenever none is. */
const MAY_BE_EMPTY = new Set(['sluice_process_nodejs_active_requests']);

describe('metrics pass promtool check metrics', promtoolSuite(), () => {
  let app: TestSluice;
  // A priced model whose first deployment always fails before its first token: every request is
  // served by failing over to the second, so the spend and failover families get samples too.
  before(async () => {
    app = await startTestSluice({
      sweepIntervalMs: 100, routing: { probeIntervalMs: 0 },
      catalogue: { sim: { deployments: [{ url: 'sim://?fail_rate=1' }, { url: 'sim://' }], price: { inputPerMillion: 1, outputPerMillion: 2 } } },
    });
  });
  after(async () => { await app?.stop(); });

  it('on a live gateway after traffic, with a sample in every family', async () => {
    const call = api(app.url);
    const body = { model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] };
    assert.equal((await call('/v1/chat/completions', { method: 'POST', json: body })).status, 200);
    const streamed = await call('/v1/chat/completions', { method: 'POST', json: { ...body, stream: true } });
    assert.equal(streamed.status, 200);
    await readSse(streamed);
    assert.equal((await call('/v1/requests', { method: 'POST', json: body })).status, 202);
    assert.equal((await api(app.url, 'sk-wrong')('/v1/models')).status, 401);
    // A refusal by quota: one request a day, asked twice.
    const key = await createUserKey(app.url, { id: 'promtool-user', quota: { requests_per_day: 1 } });
    assert.equal((await api(app.url, key)('/v1/chat/completions', { method: 'POST', json: body })).status, 200);
    assert.equal((await api(app.url, key)('/v1/chat/completions', { method: 'POST', json: body })).status, 429);

    const text = await (await fetch(`${app.url}/metrics`)).text();
    const samples = sampleNames(text);
    const empty = [...families(text)].filter(([name, type]) => {
      if (MAY_BE_EMPTY.has(name)) return false;
      const names = type === 'histogram' ? [`${name}_count`] : type === 'summary' ? [`${name}_count`, name] : [name];
      return !names.some((n) => samples.has(n));
    }).map(([name]) => name);
    assert.deepEqual(empty, [], 'families without a sample: add traffic that produces them, or initialise their labels');

    const result = await promtool(['check', 'metrics'], text);
    assert.equal(result.code, 0, `promtool check metrics:\n${result.stdout}${result.stderr}`);
    assert.equal(result.stdout + result.stderr, '');
  });
});

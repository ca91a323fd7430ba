// The gateway the SDK end-to-end tests talk to: one Sluice whose catalogue serves the same
// simulator twice, embedded (`sim://`) and as a real HTTP deployment (`sluice sim-model` in its own
// process, checking a bearer key that Sluice reads from the environment), and the checks every
// SDK test ends with: what each request stored and billed, against what the client saw.
import assert from 'node:assert/strict';
import { api, createUserKey, ledgerRows, MASTER_KEY, startTestSluice, usageWindows, type LedgerRow, type TestSluice } from './app.ts';
import { freePort, spawnSluice, START_TIMEOUT_MS, type SluiceProcess } from './process.ts';

/** Public model ids: the same simulator, in process and over HTTP. */
export const BACKENDS = { embedded: 'sim-embedded', http: 'sim-http' } as const;
export type Backend = keyof typeof BACKENDS;
export const MODES = ['queued', 'direct'] as const;
export type Mode = (typeof MODES)[number];

/** USD per million tokens, so that every ledger row carries a cost to check. */
const PRICE = { inputPerMillion: 1.5, outputPerMillion: 6 };
const SIM_KEY = 'sk-sim-model-upstream-key';

export interface SdkGateway {
  app: TestSluice;
  simModel: SluiceProcess;
  /** A user (pro tier) and its key; one per test so that its ledger holds only that test's requests. */
  user(id: string): Promise<string>;
  stop(): Promise<void>;
}

/** `sluice sim-model` with a bearer key; ready once it answers 401 without the key and 200 with it. */
async function startSimModel(): Promise<SluiceProcess> {
  const port = await freePort();
  const proc = await spawnSluice(['sim-model', '--port', String(port), '--ttft-ms', '0', '--itl-ms', '1'], { SIM_MODEL_API_KEY: SIM_KEY }, { port, waitPath: null });
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`sluice sim-model exited:\n${proc.output()}`);
    try {
      const anonymous = await fetch(`${proc.url}/v1/models`);
      if (anonymous.status === 401) {
        const keyed = await fetch(`${proc.url}/v1/models`, { headers: { authorization: `Bearer ${SIM_KEY}` } });
        assert.equal(keyed.status, 200, 'the simulator takes its key');
        return proc;
      }
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) { await proc.kill('SIGKILL'); throw new Error(`sluice sim-model did not start in time:\n${proc.output()}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startSdkGateway(): Promise<SdkGateway> {
  const simModel = await startSimModel();
  let app: TestSluice;
  try {
    app = await startTestSluice({
      routing: { probeIntervalMs: 0 },
      catalogue: {
        [BACKENDS.embedded]: { deployments: [{ id: 'embedded', url: 'sim://?ttft_ms=0&itl_ms=1' }], price: PRICE },
        [BACKENDS.http]: { deployments: [{ id: 'sim-model', url: `${simModel.url}/v1`, model: 'sim', apiKeyEnv: 'SIM_MODEL_KEY' }], price: PRICE },
      },
    }, { env: { SIM_MODEL_KEY: SIM_KEY } });
  } catch (e) {
    await simModel.kill();
    throw e;
  }
  return {
    app, simModel,
    user: (id) => createUserKey(app.url, { id, tier: 'pro' }),
    stop: async () => { await app.stop(); await simModel.kill(); },
  };
}

export interface ToolCallView { id: string; type: string; function: { name: string; arguments: string } }
export interface ChoiceView { index: number; message: { role: string; content: string | null; tool_calls?: ToolCallView[] }; finish_reason: string }
export interface RequestView {
  request_id: string; status: string; model: string; mode: string; finish_reason: string | null;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  output: { choices: ChoiceView[] } | null; usage_source: string | null; served: { deployment: string; model: string } | null;
  created_at: string;
}

/** A user's requests as GET /v1/requests/{id} shows them to that user, oldest first. */
export async function requestsOf(gw: SdkGateway, userId: string, key: string): Promise<RequestView[]> {
  const list = (await (await api(gw.app.url)(`/admin/requests?user_id=${encodeURIComponent(userId)}`)).json()) as { data: { request_id: string }[] };
  const views = await Promise.all(list.data.map(async (r) => {
    const res = await api(gw.app.url, key)(`/v1/requests/${r.request_id}`);
    assert.equal(res.status, 200);
    return (await res.json()) as RequestView;
  }));
  return views.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.request_id.localeCompare(b.request_id));
}

/** Waits until every request of the user is settled (a ledger row each), then returns the rows. */
export async function settledRows(gw: SdkGateway, userId: string, expected: number): Promise<LedgerRow[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const rows = await ledgerRows(gw.app.url, userId);
    if (rows.length >= expected) return rows;
    if (Date.now() > deadline) assert.fail(`${userId}: ${rows.length} ledger rows, ${expected} expected`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * The accounting of a user's requests, checked end to end: each completed request has exactly one
 * ledger row whose tokens are the record's usage (reported by the backend) and whose cost is the
 * catalogue price of them; the user's daily windows hold exactly the ledger's sums; and the usage
 * each client saw (in request order) is what was billed.
 */
export async function assertBilled(gw: SdkGateway, userId: string, key: string, clientUsage: { prompt: number; completion: number }[]): Promise<RequestView[]> {
  const rows = await settledRows(gw, userId, clientUsage.length);
  const views = await requestsOf(gw, userId, key);
  assert.equal(views.length, clientUsage.length, 'one request per client call');
  assert.equal(rows.length, views.length, 'one ledger row per request');
  const byId = new Map(rows.map((r) => [r.request_id, r]));
  views.forEach((v, i) => {
    const row = byId.get(v.request_id);
    assert.ok(row, `ledger row of ${v.request_id}`);
    assert.equal(v.status, 'completed');
    assert.equal(v.usage_source, 'reported', 'the backend reported the usage');
    assert.deepEqual([row.status, row.prompt_tokens, row.completion_tokens, row.charged_tokens, row.charged_requests],
      ['completed', v.usage!.prompt_tokens, v.usage!.completion_tokens, v.usage!.total_tokens, 1], `billed as recorded (${v.request_id})`);
    assert.deepEqual([row.prompt_tokens, row.completion_tokens], [clientUsage[i]!.prompt, clientUsage[i]!.completion], `billed as the client saw (call ${i + 1})`);
    const cost = Number((row as unknown as { cost_usd: string }).cost_usd);
    assert.ok(Math.abs(cost - (row.prompt_tokens * PRICE.inputPerMillion + row.completion_tokens * PRICE.outputPerMillion) / 1e6) < 1e-9, `cost of ${v.request_id}: ${cost}`);
  });
  const windows = await usageWindows(gw.app.url, key);
  assert.equal(windows.daily_requests!.used, rows.length, 'the request window holds one per request');
  assert.equal(windows.daily_tokens!.used, rows.reduce((s, r) => s + r.charged_tokens, 0), 'the token window holds exactly the ledger');
  return views;
}

/** The function the tests' model calls: a city's weather, computed locally by the client. */
export const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'The current weather of a city',
  parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } }, required: ['city', 'unit'] },
} as const;

/** The client's side of the tool: deterministic, so the test can tell its output reached the model's history. */
export function runWeather(args: unknown): { city: string; unit: string; temperature: number } {
  assert.ok(typeof args === 'object' && args !== null, 'arguments are a JSON object');
  const { city, unit } = args as { city: unknown; unit: unknown };
  assert.equal(typeof city, 'string', 'city is a string');
  assert.ok(unit === 'c' || unit === 'f', 'unit is from the enum');
  return { city: city as string, unit: unit as string, temperature: (city as string).length };
}

export const QUESTION = 'What is the weather in Paris right now?';

/**
 * The shape of every round trip in the store: the first request ends in one call of get_weather
 * (the one the client ran: same id, name and arguments once parsed), the second in text with no
 * call. `calls` is what the client saw; SDKs that parse the arguments give them parsed.
 */
export function assertRoundTrip(views: RequestView[], calls: { id: string; name: string; input: unknown }[], backend: Backend, mode: Mode): void {
  assert.equal(views.length, 2);
  const [first, second] = views as [RequestView, RequestView];
  for (const v of views) {
    assert.equal(v.model, BACKENDS[backend]);
    assert.equal(v.mode, mode);
    assert.deepEqual(v.served, { deployment: backend === 'http' ? 'sim-model' : 'embedded', model: backend === 'http' ? 'sim' : BACKENDS[backend] });
  }
  assert.equal(first.finish_reason, 'tool_calls');
  const stored = (first.output!.choices[0]!.message.tool_calls ?? []).map((c) => ({ id: c.id, type: c.type, name: c.function.name, input: JSON.parse(c.function.arguments) as unknown }));
  assert.deepEqual(stored, calls.map((c) => ({ ...c, type: 'function' })), 'the stored call is the one the client ran');
  assert.equal(second.output!.choices[0]!.message.tool_calls, undefined, 'no second call after the tool result');
  assert.ok((second.output!.choices[0]!.message.content ?? '').length > 0, 'the answer is text');
}

export { MASTER_KEY };

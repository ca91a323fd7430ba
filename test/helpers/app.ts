// Starts a whole Sluice process in-process on an ephemeral port (embedded adapters unless
// overridden), for end-to-end tests through real HTTP clients.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config.ts';
import { startSluice, type Sluice, type StartOptions } from '../../src/app.ts';

export const MASTER_KEY = 'sk-test-master-key-0123456789';

export interface TestSluice extends Sluice { url: string; dir: string; stop(): Promise<void> }

export async function startTestSluice(overrides: Record<string, unknown> = {}, opts: StartOptions = {}): Promise<TestSluice> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-test-'));
  const config = parseConfig({
    port: 0, host: '127.0.0.1', dataDir: dir, databaseUrl: 'pglite://memory', logLevel: 'silent', masterKey: MASTER_KEY,
    sim: { ttftMs: 0, itlMs: 1 }, sweepIntervalMs: 200, ...overrides,
  });
  const app = await startSluice(config, opts);
  if (!app.url) throw new Error('test Sluice has no gateway');
  return Object.assign(app, {
    url: app.url, dir,
    stop: async () => { await app.close(); rmSync(dir, { recursive: true, force: true }); },
  });
}

/** fetch with the master key (or another) as bearer. */
export function api(base: string, key = MASTER_KEY) {
  return (path: string, init: RequestInit & { json?: unknown } = {}) => {
    const headers = new Headers(init.headers);
    if (key) headers.set('authorization', `Bearer ${key}`);
    let body = init.body;
    if (init.json !== undefined) { headers.set('content-type', 'application/json'); body = JSON.stringify(init.json); }
    return fetch(base + path, { ...init, headers, body });
  };
}

/** Reads a whole SSE response into events (a small parser for assertions on raw frames). */
export async function readSse(res: Response, until?: (e: SseFrame) => boolean): Promise<SseFrame[]> {
  const out: SseFrame[] = [];
  const decoder = new TextDecoder();
  let buf = '';
  const reader = res.body!.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const raw = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const f: SseFrame = { data: '' };
      for (const line of raw.split('\n')) {
        if (line.startsWith('id: ')) f.id = line.slice(4);
        else if (line.startsWith('event: ')) f.event = line.slice(7);
        else if (line.startsWith('data: ')) f.data += line.slice(6);
        else if (line.startsWith('retry: ')) f.retry = Number(line.slice(7));
        else if (line.startsWith(':')) f.comment = line.slice(1).trim();
      }
      out.push(f);
      if (until?.(f)) { await reader.cancel(); return out; }
    }
  }
  return out;
}

export interface SseFrame { id?: string; event?: string; data: string; retry?: number; comment?: string }

export async function waitFor<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 10_000, stepMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`waitFor timed out after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Creates a user (with an optional quota override) and returns a key for it, through the admin API. */
export async function createUserKey(base: string, user: { id: string; tier?: string; quota?: Record<string, number | null> }): Promise<string> {
  const call = api(base);
  const u = await call('/admin/users', { method: 'POST', json: { id: user.id, tier: user.tier ?? 'pro' } });
  if (u.status !== 201) throw new Error(`create user: ${u.status} ${await u.text()}`);
  if (user.quota) {
    const q = await call(`/admin/quotas/${user.id}`, { method: 'PUT', json: user.quota });
    if (q.status !== 200) throw new Error(`set quota: ${q.status} ${await q.text()}`);
  }
  const k = await call('/admin/keys', { method: 'POST', json: { user_id: user.id } });
  if (k.status !== 201) throw new Error(`create key: ${k.status} ${await k.text()}`);
  return ((await k.json()) as { key: string }).key;
}

export interface UsageWindow { window: string; metric: string; limit: number; used: number; remaining: number }

/** The caller's window counters from GET /v1/usage. */
export async function usageWindows(base: string, key: string): Promise<Record<string, UsageWindow>> {
  const j = (await (await api(base, key)('/v1/usage')).json()) as { windows: UsageWindow[] };
  return Object.fromEntries(j.windows.map((w) => [`${w.window}_${w.metric}`, w]));
}

export interface LedgerRow { request_id: string; user_id: string; key_id: string; model: string; status: string; prompt_tokens: number; completion_tokens: number; charged_tokens: number; charged_requests: number; created_at: string; settled_at: string; cost_usd: string; deployment: string }

/** The ledger rows of a user, from the billing export (GET /admin/usage.csv); counts as numbers. */
export async function ledgerRows(base: string, userId: string): Promise<LedgerRow[]> {
  const res = await api(base)(`/admin/usage.csv?user_id=${encodeURIComponent(userId)}`);
  if (!res.ok) throw new Error(`usage.csv: ${res.status}`);
  const [header, ...lines] = (await res.text()).trim().split('\n');
  const cols = header!.split(',');
  return lines.filter(Boolean).map((line) => {
    const cells = line.split(',');
    const row: Record<string, string | number> = {};
    cols.forEach((c, i) => { const v = cells[i] ?? ''; row[c] = /tokens|requests/.test(c) ? Number(v) : v; });
    return row as unknown as LedgerRow;
  });
}

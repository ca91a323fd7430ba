// The chaos soak (issue #17): a cluster of 3 gateways, 2 workers and a ledger over PostgreSQL,
// clients that stream /v1/requests/{id}/events, drop the connection at random points and resume
// on a random gateway with Last-Event-ID (sometimes a stale, earlier one), while a worker is
// SIGKILLed (and replaced) every few seconds and one gateway with clients on it is SIGKILLed once.
// Afterwards every request is checked against the store, the ledger, the bus log and the limiter.
// Knobs (env): SOAK_SECONDS (load duration), SOAK_CLIENTS (concurrent clients),
// SOAK_WORKER_KILL_MS (interval between worker kills).
import { createBus } from '../../src/adapters/bus/factory.ts';
import { createLimiter } from '../../src/adapters/limiter/factory.ts';
import { readAll } from '../../src/core/event-follow.ts';
import { isTerminal } from '../../src/ports/bus.ts';
import { readSse, waitFor, type SseFrame } from './app.ts';
import { client, createCluster, dailyUsed, ledgerRows, type Cluster } from './cluster.ts';
import type { SluiceProcess } from './process.ts';
import { SERVICES } from './services.ts';

export interface SoakOptions {
  queue: 'amqp' | 'nats';
  bus: 'redis' | 'nats';
  seconds: number;
  clients: number;
  workerKillEveryMs: number;
  log?: (line: string) => void;
}

export function soakOptionsFromEnv(env: NodeJS.ProcessEnv, defaults: { seconds: number; clients: number; workerKillEveryMs: number }) {
  const num = (name: string, d: number) => { const v = Number(env[name]); return Number.isFinite(v) && v > 0 ? v : d; };
  return { seconds: num('SOAK_SECONDS', defaults.seconds), clients: num('SOAK_CLIENTS', defaults.clients), workerKillEveryMs: num('SOAK_WORKER_KILL_MS', defaults.workerKillEveryMs) };
}

/** What the soak did and what it found; every count from `gaps` on must be 0. */
export interface SoakCounts {
  requests: number; connections: number; resumes: number; staleResumes: number; connectionErrors: number;
  workerKills: number; gatewayKills: number; restarts: number;
  gaps: number; duplicates: number; doubleTerminals: number; afterTerminal: number; mismatches: number;
  unfinished: number; ledgerMismatches: number; openReservations: number; windowMismatches: number;
}

interface Followed {
  id: string; key: string;
  /** Every sequenced frame this client chain received, by sequence. */
  frames: Map<number, SseFrame>;
  lastSeq: number;
  terminalSeq: number | null;
}

const rand = (n: number) => Math.floor(Math.random() * n);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isTerminalFrame = (f: SseFrame) => f.event === 'completed' || f.event === 'error';

export async function runSoak(opts: SoakOptions): Promise<SoakCounts> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const counts: SoakCounts = {
    requests: 0, connections: 0, resumes: 0, staleResumes: 0, connectionErrors: 0, workerKills: 0, gatewayKills: 0, restarts: 0,
    gaps: 0, duplicates: 0, doubleTerminals: 0, afterTerminal: 0, mismatches: 0, unfinished: 0, ledgerMismatches: 0, openReservations: 0, windowMismatches: 0,
  };
  const cluster = await createCluster({
    queue: opts.queue, bus: opts.bus,
    env: { SIM_ITL_MS: '15', SLUICE_RESERVATION_SETTLE_AFTER_MS: '1000', WORKER_MAX_ATTEMPTS: '5' },
  });
  try {
    const gateways = await Promise.all([cluster.start('gateway'), cluster.start('gateway'), cluster.start('gateway')]);
    const workers = await Promise.all([cluster.start('worker'), cluster.start('worker')]);
    await cluster.start('ledger');
    const live = [...gateways];
    const users = await Promise.all(Array.from({ length: opts.clients }, () => cluster.user({ tier: 'enterprise' })));
    const followed: Followed[] = [];
    const endAt = Date.now() + opts.seconds * 1000;

    // Settled at once, so a chaos failure waits for the clients instead of rejecting unobserved.
    const chaos = runChaos(cluster, live, workers, endAt, opts, counts, log).then(() => null, (err: unknown) => err);
    await Promise.all(users.map((u) => clientLoop(u.key, live, endAt, followed, counts)));
    const chaosError = await chaos;
    if (chaosError) throw chaosError;
    log(`soak ${opts.queue}/${opts.bus}: load done; ${followed.length} requests followed to their end`);

    const survivor = live[0]!;
    await verify(cluster, survivor, users, followed, counts);
    return counts;
  } finally {
    await cluster.cleanup();
  }
}

/** Kills a worker every interval (a new one replaces it) and, once, a gateway with clients on it. */
async function runChaos(cluster: Cluster, live: SluiceProcess[], workers: SluiceProcess[], endAt: number, opts: SoakOptions, counts: SoakCounts, log: (l: string) => void) {
  const start = Date.now();
  // Two timelines, so a slow worker restart on a loaded machine cannot push the gateway kill past the end.
  const gatewayKill = async () => {
    await sleep((endAt - start) * 0.4);
    const victim = live.splice(rand(live.length), 1)[0]!;
    await victim.kill('SIGKILL');
    counts.gatewayKills++;
    log(`soak: SIGKILLed gateway ${victim.url}`);
  };
  const workerKills = async () => {
    await sleep(Math.min(opts.workerKillEveryMs, (endAt - start) / 2));
    while (Date.now() < endAt) {
      const i = rand(workers.length);
      await workers[i]!.kill('SIGKILL');
      counts.workerKills++;
      log(`soak: SIGKILLed a worker (${counts.workerKills})`);
      workers[i] = await startWorker(cluster);
      await sleep(Math.min(opts.workerKillEveryMs, Math.max(0, endAt - Date.now())));
    }
  };
  await Promise.all([gatewayKill(), workerKills()]);
}

/** A replacement worker; a start that times out on a loaded machine is tried again. */
async function startWorker(cluster: Cluster): Promise<SluiceProcess> {
  for (let tries = 1; ; tries++) {
    try { return await cluster.start('worker'); } catch (err) { if (tries >= 3) throw err; }
  }
}

async function clientLoop(key: string, live: SluiceProcess[], endAt: number, followed: Followed[], counts: SoakCounts): Promise<void> {
  while (Date.now() < endAt) {
    const id = await submit(key, live);
    if (!id) { counts.connectionErrors++; await sleep(200); continue; }
    counts.requests++;
    const req: Followed = { id, key, frames: new Map(), lastSeq: 0, terminalSeq: null };
    followed.push(req);
    // Bounded: a request that never ends is counted as unfinished by verify().
    const giveUp = Date.now() + 90_000;
    let first = true;
    while (req.terminalSeq === null && Date.now() < giveUp) {
      if (!first) counts.resumes++;
      first = false;
      await connect(req, live, counts);
    }
  }
}

/** POST /v1/requests; a gateway that fails (or dies) is retried elsewhere with the same Idempotency-Key. */
async function submit(key: string, live: SluiceProcess[]): Promise<string | null> {
  const body = { model: 'sim', max_tokens: 10 + rand(50), messages: [{ role: 'user', content: `soak ${Math.random()}` }] };
  const headers = { 'idempotency-key': `soak-${Math.random().toString(36).slice(2)}` };
  for (let i = 0; i < 5; i++) {
    try {
      const res = await client(live[rand(live.length)]!.url, key).post('/v1/requests', body, headers);
      if (res.status === 202) return ((await res.json()) as { request_id: string }).request_id;
      await res.body?.cancel();
    } catch { /* the gateway died: try another */ }
    await sleep(100);
  }
  return null;
}

/**
 * One connection: resume after the last sequence (or a stale earlier one), read, maybe drop the
 * connection after a random number of frames. Checks that the frames continue the Last-Event-ID
 * without gap or repeat, agree with frames of the same sequence seen before, and that nothing
 * follows the terminal event.
 */
async function connect(req: Followed, live: SluiceProcess[], counts: SoakCounts): Promise<void> {
  const stale = req.lastSeq > 0 && Math.random() < 0.2;
  const after = stale ? rand(req.lastSeq) : req.lastSeq;
  if (stale) counts.staleResumes++;
  const cutAfter = Math.random() < 0.6 ? 1 + rand(25) : Infinity;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 30_000);
  counts.connections++;
  let expected = after + 1;
  let seen = 0;
  let terminal = false;
  try {
    const res = await client(live[rand(live.length)]!.url, req.key).call(`/v1/requests/${req.id}/events`, { headers: { 'last-event-id': String(after) }, signal: ac.signal });
    if (res.status !== 200) { counts.connectionErrors++; await res.body?.cancel(); await sleep(100); return; }
    await readSse(res, (f) => {
      if (f.id === undefined) return false;
      const seq = Number(f.id);
      if (terminal) { counts.afterTerminal++; return false; }
      if (seq > expected) counts.gaps++;
      if (seq < expected) counts.duplicates++;
      expected = Math.max(expected, seq + 1);
      const prior = req.frames.get(seq);
      if (prior && (prior.event !== f.event || prior.data !== f.data)) counts.mismatches++;
      req.frames.set(seq, f);
      req.lastSeq = Math.max(req.lastSeq, seq);
      if (isTerminalFrame(f)) {
        if (req.terminalSeq !== null && req.terminalSeq !== seq) counts.doubleTerminals++;
        req.terminalSeq = seq;
        terminal = true;
        // Keep reading briefly: the server must end the stream, with nothing after the terminal.
        clearTimeout(timer);
        setTimeout(() => ac.abort(), 2000).unref();
        return false;
      }
      return ++seen >= cutAfter;
    });
  } catch {
    if (!terminal && !ac.signal.aborted) counts.connectionErrors++;
  } finally {
    clearTimeout(timer);
  }
}


/** The final attempt's text as a client assembles it: the tokens after the last restart event. */
function finalText(req: Followed): { text: string; complete: boolean } {
  let text = '';
  let complete = true;
  for (let seq = 1; seq <= (req.terminalSeq ?? 0); seq++) {
    const f = req.frames.get(seq);
    if (!f) { complete = false; continue; }
    if (f.event === 'restart') text = '';
    if (f.event === 'token') text += (JSON.parse(f.data) as { token: string }).token;
  }
  return { text, complete };
}

async function verify(cluster: Cluster, gateway: SluiceProcess, users: { id: string; key: string }[], followed: Followed[], counts: SoakCounts): Promise<void> {
  const env = cluster.env;
  const bus = await createBus(env.BUS_URL!, { ttlSeconds: 3600, maxLen: 100_000, prefix: env.BUS_PREFIX! });
  const limiter = await createLimiter(SERVICES.redis, { prefix: env.LIMITER_PREFIX! });
  try {
    for (const req of followed) {
      if (req.terminalSeq === null) { counts.unfinished++; continue; }
      const view = await client(gateway.url, req.key).get<{ status: string; result: string | null }>(`/v1/requests/${req.id}`);
      const { text, complete } = finalText(req);
      if (!complete) counts.gaps++;
      if (text !== (view.result ?? '')) counts.mismatches++;
      counts.restarts += [...req.frames.values()].filter((f) => f.event === 'restart').length;
      // The whole log: exactly one terminal event, and it is the last.
      const events = await readAll(bus, req.id, 0);
      const terminals = events.filter(isTerminal).length;
      if (terminals > 1) counts.doubleTerminals++;
      const firstTerminal = events.findIndex(isTerminal);
      if (firstTerminal !== -1 && firstTerminal !== events.length - 1) counts.afterTerminal++;
      if (firstTerminal === -1) counts.unfinished++;
    }
    // Ledger: one row per request, nothing else.
    const rowsByUser = new Map<string, Awaited<ReturnType<typeof ledgerRows>>>();
    for (const u of users) rowsByUser.set(u.id, await ledgerRows(gateway.url, u.id));
    const rowCount = new Map<string, number>();
    for (const rows of rowsByUser.values()) for (const r of rows) rowCount.set(r.request_id, (rowCount.get(r.request_id) ?? 0) + 1);
    for (const req of followed) if (rowCount.get(req.id) !== 1) counts.ledgerMismatches++;
    if (rowCount.size !== followed.length) counts.ledgerMismatches += Math.abs(rowCount.size - followed.length);
    // After the sweeper's quiet period, no reservation is open and the windows hold the ledger's sums.
    const open = await waitFor(async () => { const r = await limiter.expired(Number.MAX_SAFE_INTEGER, 1000); return r.length === 0 ? [] : null; }, 20_000, 250)
      .catch(async () => limiter.expired(Number.MAX_SAFE_INTEGER, 1000));
    counts.openReservations = open.length;
    for (const u of users) {
      const rows = rowsByUser.get(u.id)!;
      const want = { tokens: rows.reduce((s, r) => s + r.charged_tokens, 0), requests: rows.reduce((s, r) => s + r.charged_requests, 0) };
      const got = await dailyUsed(gateway.url, u.key);
      if (got.tokens !== want.tokens || got.requests !== want.requests) counts.windowMismatches++;
    }
  } finally {
    await Promise.allSettled([bus.close(), limiter.close()]);
  }
}

// The embedded store on the calling thread vs in its worker thread (pglite-thread.ts), without
// HTTP: C callers each insert a request (claimed, as direct mode does), finish it and read it back,
// as the gateway does for a non-streaming direct request. Prints requests/s and the CPU time per
// request of this process's threads (from /proc/self/task: the calling thread, and the rest, which
// holds the store's worker thread), alternating the two modes, ROUNDS rounds. In-memory stores.
// env: ROUNDS (3), REQUESTS per leg (3000), CONCURRENCY (8)
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createStore } from '../src/adapters/store/factory.ts';
import type { Store } from '../src/ports/store.ts';
import { log, main, median, r2, table } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const N = Number(process.env.REQUESTS ?? 3000);
const C = Number(process.env.CONCURRENCY ?? 8);

/** CPU milliseconds of this thread (the first task) and of all the others. */
function cpu(): { self: number; others: number } {
  let self = 0, others = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ms = (Number(f[11]) + Number(f[12])) * (1000 / 100);
      if (Number(tid) === process.pid) self += ms; else others += ms;
    } catch { /* the thread ended */ }
  }
  return { self, others };
}

async function leg(store: Store, n: number): Promise<{ rps: number; self: number; others: number }> {
  const c0 = cpu();
  const t0 = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: C }, async () => {
    while (next++ < n) {
      const id = randomUUID();
      await store.insertRequest({
        id, userId: 'bench', keyId: null, model: 'sim', mode: 'direct', payload: { messages: [{ role: 'user', content: 'Is there a direct train from Lyon to Milan?' }], maxTokens: 64 },
        priority: 0, idempotencyKey: null, bodyHash: 'h', estimatedTokens: 80, promptTokens: 16,
      }, { workerId: 'bench', claimMs: 30_000 });
      await store.finishRequest(id, {
        status: 'completed', attempt: 1, result: 'tok '.repeat(64), finishReason: 'stop', usage: { promptTokens: 16, completionTokens: 64, totalTokens: 80 },
        error: null, chargedTokens: 80, chargedRequests: 1,
      });
      if (!(await store.getRequest(id))) throw new Error(`request ${id} not found after finishing it`);
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  const c1 = cpu();
  return { rps: r2(n / seconds), self: r2((c1.self - c0.self) / n), others: r2((c1.others - c0.others) / n) };
}

main('store-thread', 10 * 60_000, async () => {
  const modes = [['in thread', false], ['worker thread', true]] as const;
  const stores = new Map<string, Store>();
  for (const [name, worker] of modes) {
    const store = await createStore('pglite://memory', { pgliteWorker: worker });
    await store.createUser({ id: 'bench', tier: 'free' });
    stores.set(name, store);
    log(`${name}: warm-up ${JSON.stringify(await leg(store, 500))}`);
  }
  const results = new Map<string, { rps: number; self: number; others: number }[]>(modes.map(([m]) => [m, []]));
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [name] of r % 2 ? modes : [...modes].reverse()) {
      const x = await leg(stores.get(name)!, N);
      log(`round ${r} ${name}: ${x.rps} req/s, CPU ms per request: calling thread ${x.self}, other threads ${x.others}`);
      results.get(name)!.push(x);
    }
  }
  for (const s of stores.values()) await s.close();
  const rows = modes.map(([name]) => {
    const xs = results.get(name)!;
    return { store: name, 'median req/s': median(xs.map((x) => x.rps)), 'calling thread ms/req': median(xs.map((x) => x.self)), 'other threads ms/req': median(xs.map((x) => x.others)),
      'total ms/req': r2(median(xs.map((x) => x.self + x.others))) };
  });
  console.log(`\nEmbedded store (PGlite in memory), insert + finish + read per request, concurrency ${C}, ${N} requests per leg, ${ROUNDS} rounds alternating`);
  console.log(table(rows));
  console.log(JSON.stringify({ bench: 'store-thread', concurrency: C, requests: N, rows }));
});

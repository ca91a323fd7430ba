// Start-up of the embedded default (PGlite store on disk, memory queue/bus/limiter): time until
// /healthz answers, the process's peak RSS so far and its RSS once it has settled, on a new store
// (its cluster is created, in a child process of the gateway since pglite-cluster.ts) and then
// again on the same store (a restart), and on an in-memory store (pglite://memory), per round.
// While the gateway starts, its RSS and that of the processes it starts are sampled every 50 ms:
// the largest of those (the cluster-creating child) and the largest sum with the gateway's are
// reported too, since the child's memory is the machine's even though it is not the gateway's.
// env: ROUNDS (3), SETTLE_MS (2000: wait after ready before RSS is read), MEMORY (1: include the
// in-memory store; 0: leave it out)
import { readFileSync, readdirSync } from 'node:fs';
import { log, main, median, procStatusMiB, r2, rssMiB, sleep, startSluice, table, tmpDir } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 2000);
const STARTS = process.env.MEMORY === '0' ? ['new store', 'restart'] as const : ['new store', 'restart', 'memory store'] as const;
type Start = typeof STARTS[number];

/** The processes below `pid` (children through /proc/PID/task/TID/children), all or only the direct ones. */
function descendantsOf(pid: number, all = true): number[] {
  let tasks: string[];
  try { tasks = readdirSync(`/proc/${pid}/task`); } catch { return []; }
  const kids = tasks.flatMap((t) => { try { return readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; } });
  return all ? kids.flatMap((k) => [k, ...descendantsOf(k)]) : kids;
}

/** The direct children of this process that run node: the gateway (tsx's esbuild service is not one). */
const gateways = (): number[] => descendantsOf(process.pid, false).filter((pid) => {
  try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'node'; } catch { return false; }
});

/** Samples, until stopped, the RSS of the gateway and of the processes it starts: the largest of
 *  those helpers (the cluster-creating child) and the largest sum of the gateway and its helpers. */
function sampleRss() {
  let helper = 0;
  let total = 0;
  const timer = setInterval(() => {
    for (const gateway of gateways()) {
      let sum = rssMiB(gateway);
      for (const pid of descendantsOf(gateway)) {
        const rss = rssMiB(pid);
        if (!Number.isFinite(rss)) continue;
        sum += rss;
        helper = Math.max(helper, rss);
      }
      if (Number.isFinite(sum)) total = Math.max(total, sum);
    }
  }, 50);
  return { stop: () => { clearInterval(timer); return { helper: r2(helper), total: r2(total) }; } };
}

main('startup', ROUNDS * STARTS.length * (SETTLE_MS + 90_000), async () => {
  const rows: { round: number; start: Start; ready_ms: number; peak_rss_mib: number; rss_mib: number; child_peak_mib: number; sum_peak_mib: number }[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const dir = tmpDir('sluice-startup-');
    for (const start of STARTS) {
      const url = start === 'memory store' ? 'pglite://memory' : `pglite://${dir}/db`;
      const sampler = sampleRss();
      const t0 = performance.now();
      const sluice = await startSluice({ SLUICE_DATA_DIR: dir, DATABASE_URL: url });
      const readyMs = Math.round(performance.now() - t0);
      await sleep(SETTLE_MS);
      const sampled = sampler.stop();
      const rss = r2(rssMiB(sluice.pid));
      const peak = r2(procStatusMiB(sluice.pid, 'VmHWM'));
      log(`round ${round} ${start}: ready after ${readyMs} ms, peak RSS ${peak} MiB, RSS ${rss} MiB, child peak ${sampled.helper} MiB, sum peak ${sampled.total} MiB`);
      rows.push({ round, start, ready_ms: readyMs, peak_rss_mib: peak, rss_mib: rss, child_peak_mib: sampled.helper, sum_peak_mib: sampled.total });
      await sluice.stop();
    }
  }
  const summary = STARTS.map((start) => {
    const of = rows.filter((r) => r.start === start);
    return {
      start, 'median ready ms': median(of.map((r) => r.ready_ms)), 'median peak RSS MiB': median(of.map((r) => r.peak_rss_mib)), 'median RSS MiB': median(of.map((r) => r.rss_mib)),
      'median child peak MiB': median(of.map((r) => r.child_peak_mib)), 'median sum peak MiB': median(of.map((r) => r.sum_peak_mib)),
    };
  });
  console.log(`\nEmbedded start-up, ${ROUNDS} rounds (RSS read ${SETTLE_MS} ms after /healthz answered)`);
  console.log(table(rows));
  console.log(table(summary));
  console.log(JSON.stringify({ bench: 'startup', rounds: rows, summary }));
});

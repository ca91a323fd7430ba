// Start-up of the embedded default (PGlite store on disk, memory queue/bus/limiter): time until
// /healthz answers, the process's peak RSS so far and its RSS once it has settled, on a new store
// (its cluster is created) and then again on the same store (a restart), per round.
// env: ROUNDS (3), SETTLE_MS (2000: wait after ready before RSS is read)
import { log, main, median, procStatusMiB, r2, rssMiB, sleep, startSluice, table, tmpDir } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 2000);

main('startup', ROUNDS * 2 * (SETTLE_MS + 60_000), async () => {
  const rows: { round: number; start: string; ready_ms: number; peak_rss_mib: number; rss_mib: number }[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const dir = tmpDir('sluice-startup-');
    for (const start of ['new store', 'restart'] as const) {
      const t0 = performance.now();
      const sluice = await startSluice({ SLUICE_DATA_DIR: dir, DATABASE_URL: `pglite://${dir}/db` });
      const readyMs = Math.round(performance.now() - t0);
      await sleep(SETTLE_MS);
      const rss = r2(rssMiB(sluice.pid));
      const peak = r2(procStatusMiB(sluice.pid, 'VmHWM'));
      log(`round ${round} ${start}: ready after ${readyMs} ms, peak RSS ${peak} MiB, RSS ${rss} MiB`);
      rows.push({ round, start, ready_ms: readyMs, peak_rss_mib: peak, rss_mib: rss });
      await sluice.stop();
    }
  }
  const summary = (['new store', 'restart'] as const).map((start) => {
    const of = rows.filter((r) => r.start === start);
    return { start, 'median ready ms': median(of.map((r) => r.ready_ms)), 'median peak RSS MiB': median(of.map((r) => r.peak_rss_mib)), 'median RSS MiB': median(of.map((r) => r.rss_mib)) };
  });
  console.log(`\nEmbedded start-up, ${ROUNDS} rounds (RSS read ${SETTLE_MS} ms after /healthz answered)`);
  console.log(table(rows));
  console.log(table(summary));
  console.log(JSON.stringify({ bench: 'startup', rounds: rows, summary }));
});

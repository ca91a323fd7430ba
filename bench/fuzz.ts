// The long fuzz run: the properties of test/security/fuzz-props.ts (the same ones the test runs)
// with 100,000 cases in total against a gateway in a child process. Unlike the test it does not
// stop at the first failure: every case runs, every distinct failure is counted with its shortest
// example, and a gateway that crashed is restarted. Prints responses by status, cases/s, the
// gateway's RSS at start / peak / end, the failures, and one JSON line.
//
// Options (environment): FUZZ_CASES (100000), FUZZ_SEED (20261203), FUZZ_MAX_SECONDS (3600: stops
// early past it), FUZZ_ONLY (substring of property names).
import fc from 'fast-check';
import { DEFAULT_FUZZ_SEED, fuzzProperties, show, startFuzzTarget, Tally, Violation, type FuzzTarget } from '../test/security/fuzz-props.ts';

const CASES = Number(process.env.FUZZ_CASES ?? 100_000);
const SEED = Number(process.env.FUZZ_SEED ?? DEFAULT_FUZZ_SEED);
const MAX_SECONDS = Number(process.env.FUZZ_MAX_SECONDS ?? 3600);
const ONLY = process.env.FUZZ_ONLY;
/** Inputs generated at once (long strings make a whole property's inputs too big to hold). */
const BATCH = 200;

const log = (...a: unknown[]): void => { console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...a); };

interface Failure { count: number; example: string; detail: string }

/** Samples the gateway's RSS every 500 ms; the peak covers every gateway process of the run. */
function rssSampler(target: FuzzTarget): { peak(): number; stop(): void } {
  let peak = 0;
  const timer = setInterval(() => { try { if (target.gateway.alive()) peak = Math.max(peak, target.gateway.rssMiB()); } catch { /* restarting */ } }, 500);
  return { peak: () => peak, stop: () => clearInterval(timer) };
}

async function main(): Promise<void> {
  const properties = fuzzProperties.filter((p) => !ONLY || p.name.includes(ONLY));
  const perProperty = Math.ceil(CASES / properties.length);
  log(`fuzz bench: seed ${SEED}, ${perProperty} cases × ${properties.length} properties = ${perProperty * properties.length} cases`);
  const target = await startFuzzTarget();
  const tally = new Tally();
  const failures = new Map<string, Failure>();
  const rssStart = target.gateway.rssMiB();
  const sampler = rssSampler(target);
  const started = Date.now();
  const deadline = started + MAX_SECONDS * 1000;
  let cases = 0;
  try {
    // Round-robin over the properties a batch at a time, so a run cut short by FUZZ_MAX_SECONDS still covers them all.
    const batches = Math.ceil(perProperty / BATCH);
    for (let batch = 0; batch < batches && Date.now() < deadline; batch++) {
      for (const [i, p] of properties.entries()) {
        const n = Math.min(BATCH, perProperty - batch * BATCH);
        // One seed per property and batch: a case replays from (seed, property, batch).
        for (const input of fc.sample(p.arbitrary, { seed: SEED + i * 100_003 + batch, numRuns: n })) {
          if (Date.now() > deadline) break;
          try { await p.check({ target, tally }, input); } catch (err) {
            const v = err instanceof Violation ? err : new Violation(`${p.name}: harness error ${(err as Error).name}`, (err as Error).message);
            const example = show(input);
            const f = failures.get(v.signature);
            if (!f) { failures.set(v.signature, { count: 1, example, detail: v.message.split('\n').slice(1, 4).join(' | ').slice(0, 400) }); log(`new failure: ${v.signature}`); }
            else { f.count++; if (example.length < f.example.length) f.example = example; }
          }
          cases++;
        }
      }
      log(`batch ${batch + 1}/${batches}: ${cases} cases, ${failures.size} distinct failures, ${target.restarts} restarts`);
    }
  } finally {
    sampler.stop();
    const seconds = (Date.now() - started) / 1000;
    const rssEnd = target.gateway.alive() ? target.gateway.rssMiB() : NaN;
    const rssPeak = Math.max(sampler.peak(), target.gateway.alive() ? target.gateway.peakRssMiB() : 0);
    console.log(`\nresponses by outcome (${tally.total} responses):\n${tally.table()}`);
    console.log(`\n${cases} cases in ${seconds.toFixed(0)} s = ${(cases / seconds).toFixed(1)} cases/s; gateway restarted ${target.restarts} times after a crash`);
    console.log(`gateway RSS: start ${rssStart.toFixed(0)} MiB, peak ${rssPeak.toFixed(0)} MiB, end ${rssEnd.toFixed(0)} MiB`);
    console.log(`\n${failures.size} distinct failures:`);
    for (const [sig, f] of [...failures.entries()].sort((a, b) => b[1].count - a[1].count)) console.log(`- ${sig} (×${f.count})\n    shortest input: ${f.example}\n    ${f.detail}`);
    console.log(JSON.stringify({ seed: SEED, cases, seconds: Math.round(seconds), cases_per_s: Number((cases / seconds).toFixed(1)), restarts: target.restarts, rss_mib: { start: Math.round(rssStart), peak: Math.round(rssPeak), end: Math.round(rssEnd) }, failures: Object.fromEntries([...failures].map(([k, f]) => [k, f.count])) }));
    await target.stop();
  }
}

const hardStop = setTimeout(() => { console.error('fuzz bench: hard time bound passed'); process.exit(2); }, (MAX_SECONDS + 120) * 1000);
hardStop.unref();
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });

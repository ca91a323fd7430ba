// Property-based fuzzing of every JSON route and every WebSocket message type against a gateway in a
// child process (a crash is seen, not suffered): no 5xx, the catalogue's error shape, well-formed
// SSE, the process alive and /healthz fine after each property. A fixed seed (FUZZ_SEED to change
// it) and a bounded number of cases per property (FUZZ_RUNS); both printed, with a table of
// responses by status at the end. A failing property prints fast-check's shrunk counterexample
// and the seed and path to replay it. The long run is bench/fuzz.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_FUZZ_SEED, fuzzProperties, startFuzzTarget, Tally, type FuzzTarget } from './fuzz-props.ts';

const seed = Number(process.env.FUZZ_SEED ?? DEFAULT_FUZZ_SEED);
const numRuns = Number(process.env.FUZZ_RUNS ?? 25);
/** Past this, a property stops generating (and shrinking) and reports what it has: bounds the file's time. */
const PROPERTY_BUDGET_MS = Number(process.env.FUZZ_PROPERTY_MS ?? 20_000);

describe('fuzz: every JSON route and WebSocket message type', { timeout: 15 * 60_000 }, () => {
  let target: FuzzTarget;
  const tally = new Tally();

  before(async () => {
    console.log(`fuzz: seed ${seed} (FUZZ_SEED), ${numRuns} runs per property (FUZZ_RUNS), ${fuzzProperties.length} properties`);
    target = await startFuzzTarget();
  });
  after(async () => {
    console.log(`fuzz: seed ${seed}, ${tally.total} responses, gateway restarted ${target?.restarts ?? 0} times after a crash\n${tally.table()}`);
    await target?.stop();
  });

  fuzzProperties.forEach((p, i) => {
    it(p.name, async () => {
      await fc.assert(fc.asyncProperty(p.arbitrary, (input) => p.check({ target, tally }, input)), {
        // One seed per property, so each replays alone and adding a property does not reshuffle the others.
        seed: seed + i, numRuns, interruptAfterTimeLimit: PROPERTY_BUDGET_MS,
      });
      await target.ensure();
      assert.ok(await target.healthy(), `/healthz does not answer after ${p.name}`);
    });
  });
});

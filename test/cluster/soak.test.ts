// The chaos soak of issue #17 on both topologies, bounded for CI (a longer run: bench/README.md).
// Random disconnects and resumes on random gateways (some with a stale Last-Event-ID), workers
// SIGKILLed every few seconds, one gateway SIGKILLed with clients on it; then per request: no gap,
// no duplicate, one terminal event with nothing after it, the final attempt's text equal to the
// stored result, one ledger row, and no reservation left with the windows equal to the ledger.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { serviceSuite } from '../helpers/services.ts';
import { runSoak, soakOptionsFromEnv, type SoakCounts } from '../helpers/soak.ts';

const knobs = soakOptionsFromEnv(process.env, { seconds: 30, clients: 20, workerKillEveryMs: 10_000 });
const base = { ...(await serviceSuite('postgres')), ...(await serviceSuite('redis')) };

function assertClean(c: SoakCounts): void {
  assert.ok(c.requests >= c.workerKills, `the soak ran requests (${c.requests})`);
  assert.ok(c.resumes > 0 && c.staleResumes > 0, 'clients resumed, some with a stale Last-Event-ID');
  assert.ok(c.workerKills >= 1 && c.gatewayKills === 1, 'workers and a gateway were killed');
  const faults = {
    gaps: c.gaps, duplicates: c.duplicates, doubleTerminals: c.doubleTerminals, afterTerminal: c.afterTerminal, mismatches: c.mismatches,
    unfinished: c.unfinished, ledgerMismatches: c.ledgerMismatches, openReservations: c.openReservations, windowMismatches: c.windowMismatches,
  };
  assert.deepEqual(faults, Object.fromEntries(Object.keys(faults).map((k) => [k, 0])));
}

for (const topology of [
  { queue: 'amqp', bus: 'redis', services: await serviceSuite('rabbitmq') },
  { queue: 'nats', bus: 'nats', services: await serviceSuite('nats') },
] as const) {
  describe(`chaos soak (queue ${topology.queue}, bus ${topology.bus}, ${knobs.clients} clients, ${knobs.seconds} s)`, { ...base, ...topology.services }, () => {
    it('no gap, no duplicate, one terminal event, results equal to the streams, charged once, no reservation left', async () => {
      const counts = await runSoak({ queue: topology.queue, bus: topology.bus, ...knobs });
      console.log(`soak ${topology.queue}/${topology.bus}: ${JSON.stringify(counts)}`);
      assertClean(counts);
    });
  });
}

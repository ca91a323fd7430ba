// A gateway process at its file-descriptor limit. In the 19,900-listener bench 44 listeners were
// answered 500: client sockets had taken every descriptor, and the store's pool then failed to
// open a connection (connect EMFILE). Here the limit is lowered to 300 (prlimit), so a few hundred
// sockets reach it: connections beyond the process's cap must get a 503 catalogue answer (not a
// reset), and the store must still open its connections for the sockets already admitted.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.ts';
import { RawConnection } from '../helpers/raw-http.ts';
import { createDatabase, dropDatabase, serviceSuite, uniqueName } from '../helpers/services.ts';

const LIMIT = 300;
/** More sockets than the limit allows, so that the limit is reached whatever the process holds itself. */
const SOCKETS = LIMIT;
/** Concurrent store writes: more than the store's pool keeps open while idle, so it must open connections. */
const WRITES = 10;

const suite = existsSync('/usr/bin/prlimit') ? await serviceSuite('postgres') : { skip: 'prlimit (util-linux) is not installed' };

describe(`a gateway at its descriptor limit (${LIMIT})`, suite, () => {
  const db = uniqueName('sluice_fdlimit');
  let gw: GatewayProcess;
  before(async () => {
    const url = await createDatabase(db);
    gw = await startGatewayProcess({ env: { DATABASE_URL: url, SLUICE_MAX_CONNECTIONS_PER_IP: '0' }, wrap: ['prlimit', `--nofile=${LIMIT}`] });
  });
  after(async () => { await gw?.stop(); await dropDatabase(db); });

  it('answers every connection (200, or 503 SLUICE_ERR_CONNECTION_LIMIT over its cap) and the store still opens connections for the admitted ones', async () => {
    const conns: RawConnection[] = [];
    try {
      for (let i = 0; i < SOCKETS; i++) conns.push(await RawConnection.open(gw.url));
      for (const c of conns) c.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
      const answers = await Promise.all(conns.map((c) => c.response().then((r) => r, (e: Error) => ({ status: 0, headers: {} as Record<string, string>, body: e.message }))));
      const admitted = conns.filter((_, i) => answers[i]!.status === 200);
      const refused = answers.filter((r) => r.status === 503);
      // Before the cap, sockets beyond the limit were reset (status 0 here) or answered 500.
      assert.deepEqual(answers.filter((r) => r.status !== 200 && r.status !== 503), [], 'every connection gets an answer');
      assert.ok(refused.length > 0, 'the limit was reached');
      for (const r of refused) {
        assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, 'SLUICE_ERR_CONNECTION_LIMIT');
        assert.equal(r.headers['retry-after'], '1');
      }
      assert.ok(admitted.length >= WRITES);

      // The admitted connections still work, store writes included: the pool grows into the reserve.
      const body = JSON.stringify({ model: 'sim', max_tokens: 4, messages: [{ role: 'user', content: 'at the limit' }] });
      const writes = admitted.slice(0, WRITES);
      for (const c of writes) {
        c.write(`POST /v1/requests HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gw.masterKey}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      }
      const posted = await Promise.all(writes.map((c) => c.response()));
      assert.deepEqual(posted.map((r) => `${r.status} ${r.status === 202 ? '' : r.body}`), posted.map(() => '202 '));
      assert.ok(gw.alive());
    } finally { for (const c of conns) c.destroy(); }
  });
});

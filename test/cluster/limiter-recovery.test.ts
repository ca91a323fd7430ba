// Redis goes away after start and comes back: sluice_limiter_degraded goes to 1 during the outage
// and back to 0 after it (with a log line saying so), under both failure policies; in 'refuse'
// mode the log never claims a per-process fallback. The outage is real: the limiter talks to the
// machine's Redis through a TCP proxy the test cuts and restores.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/core/logger.ts';
import { api, createUserKey, startTestSluice, waitFor, type TestSluice } from '../helpers/app.ts';
import { deleteRedisKeys, SERVICES, serviceSuite, uniqueName } from '../helpers/services.ts';
import { tcpCut, type TcpCut } from '../helpers/tcp-cut.ts';

/** A pino destination keeping every line, parsed. */
function logCapture() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) { for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>); cb(); },
  });
  return { lines, stream };
}

const degraded = async (app: TestSluice) => Number(/^sluice_limiter_degraded (\d+)$/m.exec(await (await fetch(`${app.url}/metrics`)).text())?.[1]);

const body = { model: 'sim', max_tokens: 3, messages: [{ role: 'user', content: 'hello' }] };

for (const policy of ['fallback', 'refuse'] as const) {
  describe(`limiter outage and recovery (${policy})`, await serviceSuite('redis'), () => {
    const prefix = `${uniqueName('limrec')}:`;
    const logs = logCapture();
    let proxy: TcpCut;
    let app: TestSluice;
    let key: string;
    before(async () => {
      const redis = new URL(SERVICES.redis);
      proxy = await tcpCut({ host: redis.hostname, port: Number(redis.port) });
      app = await startTestSluice(
        { limiterUrl: `redis://127.0.0.1:${proxy.port}`, limiterPrefix: prefix, limiterFailure: policy, logLevel: 'info' },
        { logger: createLogger('info', 'all', logs.stream) },
      );
      key = await createUserKey(app.url, { id: `alice-${policy}` });
    });
    after(async () => {
      await app?.stop();
      await proxy?.close();
      await deleteRedisKeys(`${prefix}*`);
    });

    it('the degraded gauge goes to 1 during the outage and back to 0 after it', async () => {
      const call = api(app.url, key);
      assert.equal((await call('/v1/chat/completions', { method: 'POST', json: body })).status, 200);
      assert.equal(await degraded(app), 0);

      await proxy.cut();
      const during = await call('/v1/chat/completions', { method: 'POST', json: body });
      if (policy === 'fallback') assert.equal(during.status, 200, await during.clone().text());
      else {
        assert.equal(during.status, 503);
        assert.equal(((await during.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_LIMITER_UNAVAILABLE');
      }
      assert.equal(await degraded(app), 1);

      await proxy.restore();
      // The limiter probes Redis every second: the gauge returns without any request.
      await waitFor(async () => (await degraded(app)) === 0, 20_000, 100);
      assert.equal((await call('/v1/chat/completions', { method: 'POST', json: body })).status, 200);
      assert.equal(await degraded(app), 0);

      const messages = logs.lines.map((l) => String(l.msg));
      const down = messages.filter((m) => m.startsWith('limiter degraded'));
      assert.equal(down.length, 1, messages.join('\n'));
      if (policy === 'refuse') {
        assert.ok(!messages.some((m) => /fallback/.test(m)), `refuse mode must not claim a fallback:\n${down.join('\n')}`);
        assert.match(down[0]!, /refusing/);
      } else {
        assert.match(down[0]!, /per-process fallback/);
      }
      assert.equal(messages.filter((m) => m.startsWith('limiter recovered')).length, 1);
    });
  });
}

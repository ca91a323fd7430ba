// The web console's static files (src/http/console-routes.ts): the headers (CSP, caching, nosniff),
// the refusal of every path that leaves the build directory, and the clear error when the console
// was never built. Served from a temporary build directory, plus the real build on a real gateway.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { CONSOLE_CSP, consoleDirs, registerConsoleRoutes } from '../../src/http/console-routes.ts';
import { sendError } from '../../src/http/server.ts';
import { isSluiceError, SluiceError } from '../../src/core/errors.ts';
import { startTestSluice, type TestSluice } from '../helpers/app.ts';

/** A GET with the path sent exactly as written (fetch and URL would normalise ../ and %2e away). */
function rawGet(base: string, path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port: Number(port), path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function serve(dirs: string[], log?: { warn(...args: unknown[]): void }): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify();
  app.setErrorHandler((err, _req, reply) => sendError(reply, isSluiceError(err) ? err : new SluiceError('SLUICE_ERR_INTERNAL', String(err))));
  registerConsoleRoutes(app, { dirs, ...(log && { log }) });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url };
}

const SECRET = 'top-secret-outside-the-console';

describe('console static files', () => {
  let root: string;
  let built: string;
  let server: { app: FastifyInstance; url: string };
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'sluice-console-'));
    built = join(root, 'dist', 'console');
    mkdirSync(join(built, 'assets'), { recursive: true });
    writeFileSync(join(built, 'index.html'), '<!doctype html><title>console</title><script type="module" src="/console/assets/index-AbCdEf12.js"></script>');
    writeFileSync(join(built, 'assets', 'index-AbCdEf12.js'), 'console.log("app")');
    writeFileSync(join(built, 'assets', 'index-Zy98xw76.css'), 'body{}');
    writeFileSync(join(built, 'robots.txt'), 'User-agent: *');
    writeFileSync(join(root, 'secret.txt'), SECRET);
    writeFileSync(join(root, 'dist', 'secret.txt'), SECRET);
    symlinkSync(join(root, 'secret.txt'), join(built, 'assets', 'link-AbCdEf12.js'));
    symlinkSync(root, join(built, 'up'));
    server = await serve([join(root, 'missing'), built]);
  });
  after(async () => {
    await server?.app.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('serves index.html at /console/ revalidated every time, with a strict CSP, nosniff and no framing', async () => {
    const res = await fetch(`${server.url}/console/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    assert.equal(res.headers.get('content-security-policy'), CONSOLE_CSP);
    assert.match(CONSOLE_CSP, /default-src 'self'/);
    assert.match(CONSOLE_CSP, /script-src 'self'(;|$)/, 'no inline or eval script');
    assert.match(CONSOLE_CSP, /frame-ancestors 'none'/);
    assert.match(CONSOLE_CSP, /object-src 'none'/);
    assert.doesNotMatch(CONSOLE_CSP, /unsafe-inline|unsafe-eval/);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    assert.match(await res.text(), /<title>console<\/title>/);
    const index = await fetch(`${server.url}/console/index.html`);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
  });

  it('redirects /console to /console/', async () => {
    const res = await fetch(`${server.url}/console`, { redirect: 'manual' });
    assert.equal(res.status, 302);
    assert.equal(res.headers.get('location'), '/console/');
  });

  it('caches hashed assets for a year as immutable, with their content type; other files are revalidated', async () => {
    const js = await fetch(`${server.url}/console/assets/index-AbCdEf12.js`);
    assert.equal(js.status, 200);
    assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(js.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.equal(await js.text(), 'console.log("app")');
    const css = await fetch(`${server.url}/console/assets/index-Zy98xw76.css`);
    assert.equal(css.headers.get('content-type'), 'text/css; charset=utf-8');
    const txt = await fetch(`${server.url}/console/robots.txt`);
    assert.equal(txt.headers.get('cache-control'), 'no-cache');
  });

  it('answers a missing file with 404 SLUICE_ERR_NOT_FOUND in the catalogue shape', async () => {
    const res = await fetch(`${server.url}/console/assets/nope-12345678.js`);
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SLUICE_ERR_NOT_FOUND');
  });

  it('never serves a file outside the build directory, however the path is spelt', async () => {
    const probes = [
      '/console/../secret.txt', '/console/../../secret.txt', '/console/assets/../../secret.txt',
      '/console/%2e%2e/secret.txt', '/console/%2e%2e/%2e%2e/secret.txt', '/console/assets/%2e%2e%2f%2e%2e%2fsecret.txt',
      '/console/..%2fsecret.txt', '/console/..%5csecret.txt', '/console/assets%2f..%2f..%2fsecret.txt',
      '/console/%252e%252e/secret.txt', '/console//etc/passwd', '/console/' + encodeURIComponent(join(root, 'secret.txt')),
      '/console/./index.html/../../secret.txt', '/console/%00', '/console/index.html%00.js',
      // A symlink in the build directory to a file outside, and one to a directory outside: not files of the build.
      '/console/assets/link-AbCdEf12.js', '/console/up/secret.txt', '/console/up/dist/secret.txt',
    ];
    for (const path of probes) {
      const res = await rawGet(server.url, path);
      assert.ok(!res.body.includes(SECRET), `${path} leaked the file`);
      assert.ok([400, 404].includes(res.status), `${path}: ${res.status}`);
      const code = (JSON.parse(res.body) as { error: { code: string } }).error.code;
      assert.ok(['SLUICE_ERR_NOT_FOUND', 'SLUICE_ERR_BAD_REQUEST', 'SLUICE_ERR_ROUTE_NOT_FOUND'].includes(code), `${path}: ${code}`);
    }
    // The raw client did send the dot segments: the same server does serve what is inside.
    assert.equal((await rawGet(server.url, '/console/assets/index-AbCdEf12.js')).status, 200);
  });

  it('without a build, answers 503 SLUICE_ERR_CONSOLE_NOT_BUILT telling to run npm run build; the directories looked in go to the log only', async () => {
    const dirs = [join(root, 'nothing-here'), join(root, 'nor-here')];
    const logged: unknown[][] = [];
    const empty = await serve(dirs, { warn: (...args) => { logged.push(args); } });
    try {
      for (const path of ['/console/', '/console/assets/index-AbCdEf12.js']) {
        const res = await fetch(`${empty.url}${path}`);
        assert.equal(res.status, 503);
        const text = await res.text();
        const body = JSON.parse(text) as { error: { code: string; message: string } };
        assert.equal(body.error.code, 'SLUICE_ERR_CONSOLE_NOT_BUILT');
        assert.match(body.error.message, /npm run build/);
        assert.ok(!text.includes(root), `the answer names no server path: ${text}`);
      }
      assert.equal(logged.length, 1, 'logged once, not per request');
      assert.deepEqual(logged[0]![0], { dirs });
    } finally {
      await empty.app.close();
    }
  });

  it('finds the build beside compiled modules, else the repository dist/ from the sources', () => {
    assert.deepEqual(consoleDirs('file:///repo/dist/http/console-routes.js'), ['/repo/dist/console', '/repo/dist/console']);
    assert.deepEqual(consoleDirs('file:///repo/.build-x/http/console-routes.js'), ['/repo/.build-x/console', '/repo/dist/console']);
    assert.deepEqual(consoleDirs('file:///repo/src/http/console-routes.ts'), ['/repo/src/console', '/repo/dist/console']);
  });
});

describe('console on a real gateway', () => {
  const built = consoleDirs().find((d) => existsSync(join(d, 'index.html')));
  const skip = built ? false : process.env.CI === 'true' ? false : 'the console is not built (run npm run build)';
  if (skip) console.log(`# SKIP console on a real gateway: ${skip}`);
  let app: TestSluice;
  before(async () => { if (!skip) app = await startTestSluice(); });
  after(async () => { await app?.stop(); });

  it('serves the built console at /console/, every asset it names, and the API beside it', { skip }, async () => {
    assert.ok(built, 'under CI the console must be built (npm ci runs prepare)');
    const res = await fetch(`${app.url}/console/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-security-policy'), CONSOLE_CSP);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    const html = await res.text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script: the CSP would block it');
    const assets = [...html.matchAll(/(?:src|href)="(\/console\/assets\/[^"]+)"/g)].map((m) => m[1]!);
    assert.ok(assets.some((a) => a.endsWith('.js')) && assets.some((a) => a.endsWith('.css')), html);
    for (const a of assets) {
      const r = await fetch(app.url + a);
      assert.equal(r.status, 200, a);
      assert.equal(r.headers.get('cache-control'), 'public, max-age=31536000, immutable', a);
      assert.equal(Buffer.from(await r.arrayBuffer()).length, readFileSync(join(built!, a.slice('/console/'.length))).length, a);
    }
  });
});

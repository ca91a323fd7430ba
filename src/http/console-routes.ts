// The web console (console/, built by scripts/build.mjs with Vite) served at /console/: static
// files only, from the directory the build wrote. Only files found by listing that directory are
// ever served (a path is a key in that list, never joined onto the file system), so no path can
// reach outside it. Hashed assets are cached for a year (immutable); index.html is revalidated
// every time, so a new build is picked up at once. A strict Content-Security-Policy: the console
// loads only its own files, runs no inline script and talks only to this origin.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply } from 'fastify';
import { SluiceError } from '../core/errors.ts';

export const CONSOLE_CSP = [
  "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:", "connect-src 'self'",
  "font-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.json': 'application/json', '.woff2': 'font/woff2', '.txt': 'text/plain; charset=utf-8',
};

/** A Vite asset name carries a content hash (index-CK2zhYWd.js): it never changes under that name. */
const HASHED = /^assets\/[^/]+-[A-Za-z0-9_-]{8,}\.[a-z0-9]+$/;

/**
 * Where the built console is: beside the compiled modules (DIR/console for DIR/http, the layout of
 * a production build in any --out-dir), else the repository's dist/console (running the sources
 * with SLUICE_DEV=1 or tsx: src/http → ../../dist/console).
 */
export function consoleDirs(moduleUrl: string = import.meta.url): string[] {
  const here = dirname(fileURLToPath(moduleUrl));
  return [join(here, '..', 'console'), join(here, '..', '..', 'dist', 'console')];
}

interface Listing { dir: string; files: Map<string, string>; at: number }

/** Every regular file under dir, by its path relative to dir with '/' separators. */
function listFiles(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string, depth: number) => {
    if (depth > 8) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, e.name);
      if (e.isDirectory()) walk(path, depth + 1);
      else if (e.isFile()) files.set(relative(dir, path).split(sep).join('/'), path);
    }
  };
  walk(dir, 0);
  return files;
}

/** How often a miss may list the directory again (a rebuild while the gateway runs is then seen). */
const RESCAN_MS = 2000;

/** `log`: where the missing build's directories are named (default: the app's logger). */
export function registerConsoleRoutes(app: FastifyInstance, opts: { dirs?: string[]; log?: Pick<FastifyBaseLogger, 'warn'> } = {}): void {
  const dirs = opts.dirs ?? consoleDirs();
  const log = opts.log ?? app.log;
  /** Whether the missing build was logged since the console was last found: once per outage, not per request. */
  let reported = false;
  let listing: Listing | null = null;
  const scan = (): Listing | null => {
    const dir = dirs.find((d) => existsSync(join(d, 'index.html')) && statSync(join(d, 'index.html')).isFile());
    listing = dir ? { dir, files: listFiles(dir), at: Date.now() } : null;
    return listing;
  };
  const lookup = (path: string): string | undefined => {
    let l = listing ?? scan();
    let file = l?.files.get(path);
    if (!file && (!l || Date.now() - l.at > RESCAN_MS)) { l = scan(); file = l?.files.get(path); }
    if (!l) {
      // The directories are the server's own file layout: the operator's log names them, a client's answer does not.
      if (!reported) { reported = true; log.warn({ dirs }, 'the web console is not built: run npm run build'); }
      throw new SluiceError('SLUICE_ERR_CONSOLE_NOT_BUILT');
    }
    reported = false;
    return file;
  };

  const send = async (reply: FastifyReply, path: string) => {
    const file = lookup(path);
    if (!file) throw new SluiceError('SLUICE_ERR_NOT_FOUND', 'No such console file');
    let body: Buffer;
    try { body = await readFile(file); } catch {
      listing = null; // removed by a rebuild in progress: list again next time
      throw new SluiceError('SLUICE_ERR_NOT_FOUND', 'No such console file');
    }
    const cache = HASHED.test(path) ? 'public, max-age=31536000, immutable' : 'no-cache';
    return reply.headers({
      'content-type': TYPES[extname(path)] ?? 'application/octet-stream',
      'cache-control': cache,
      'content-security-policy': CONSOLE_CSP,
      'x-frame-options': 'DENY',
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-resource-policy': 'same-origin',
      'permissions-policy': 'camera=(), microphone=(), geolocation=()',
    }).send(body);
  };

  app.get('/console', async (_req, reply) => reply.redirect('/console/', 302));
  app.get('/console/', async (_req, reply) => send(reply, 'index.html'));
  app.get('/console/*', async (req, reply) => {
    const path = (req.params as { '*': string })['*'];
    // The listing holds no empty, dot or backslash segment: such a path can only miss. Refused
    // early all the same, so a probe for ../ never touches the listing.
    if (path.length > 300 || path.split('/').some((s) => s === '' || s === '.' || s === '..' || s.includes('\\') || s.includes('\0'))) {
      throw new SluiceError('SLUICE_ERR_NOT_FOUND', 'No such console file');
    }
    return send(reply, path);
  });
}

// What a process checks before it opens anything: every adapter URL has a scheme its factory
// accepts, and the port it will listen on is free. Either mistake then costs milliseconds and
// names the setting, instead of surfacing after the store has booted and the worker has started.
import net from 'node:net';
import type { Config } from './config.ts';
import { BUS_SCHEMES } from './adapters/bus/factory.ts';
import { LIMITER_SCHEMES } from './adapters/limiter/factory.ts';
import { MODEL_SCHEMES } from './adapters/model/factory.ts';
import { QUEUE_SCHEMES } from './adapters/queue/factory.ts';
import { STORE_SCHEMES } from './adapters/store/factory.ts';
import { redact, urlScheme } from './adapters/url-scheme.ts';
import { SluiceError } from './core/errors.ts';

interface UrlSetting { field: string; param: string; url: string; schemes: readonly string[] }

function settings(config: Config): UrlSetting[] {
  const list: UrlSetting[] = [
    { field: 'DATABASE_URL', param: 'databaseUrl', url: config.databaseUrl, schemes: STORE_SCHEMES },
    { field: 'LIMITER_URL', param: 'limiterUrl', url: config.limiterUrl, schemes: LIMITER_SCHEMES },
    { field: 'QUEUE_URL', param: 'queueUrl', url: config.queueUrl, schemes: QUEUE_SCHEMES },
    { field: 'BUS_URL', param: 'busUrl', url: config.busUrl, schemes: BUS_SCHEMES },
    { field: 'MODEL_URL', param: 'modelUrl', url: config.modelUrl, schemes: MODEL_SCHEMES },
  ];
  for (const [model, entry] of Object.entries(config.catalogue)) {
    entry.deployments.forEach((d, i) => {
      const field = `catalogue.${model}.deployments[${i}].url`;
      list.push({ field, param: field, url: d.url, schemes: MODEL_SCHEMES });
    });
  }
  return list;
}

/** Throws SLUICE_ERR_CONFIG naming the first URL whose scheme no adapter takes, or that does not parse. */
export function checkAdapterUrls(config: Config): void {
  for (const s of settings(config)) {
    const scheme = urlScheme(s.url);
    const accepted = s.schemes.map((x) => `${x}://`).join(', ');
    if (!s.schemes.includes(scheme)) {
      const got = scheme ? `scheme "${scheme}:"` : 'no scheme';
      throw new SluiceError('SLUICE_ERR_CONFIG', `${s.field}=${redact(s.url)}: ${got} is not supported; use one of ${accepted}`, { param: s.param });
    }
    // pglite:// takes a path, not a URL; every other scheme must parse (a bad port, a stray space).
    if (scheme === 'pglite') {
      if (!s.url.startsWith('pglite://') || s.url.length === 'pglite://'.length) {
        throw new SluiceError('SLUICE_ERR_CONFIG', `${s.field}=${s.url}: a PGlite URL is pglite://DIRECTORY or pglite://memory`, { param: s.param });
      }
      continue;
    }
    try { new URL(s.url); } catch {
      throw new SluiceError('SLUICE_ERR_CONFIG', `${s.field}=${redact(s.url)} is not a valid URL (check the host, the port and any special characters in the password: percent-encode them)`, { param: s.param });
    }
  }
}

/**
 * Binds host:port and lets it go at once. The real listener binds the same address moments later
 * (and still reports a lost race the same way); checking first keeps the failure ahead of the
 * store's boot and the worker's start, without holding a socket that accepts connections nobody
 * serves yet.
 */
export async function checkPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', (e) => reject(listenError(e, host, port)));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/** The listener's bind failure as SLUICE_ERR_CONFIG naming the address and what to do. */
export function listenError(e: unknown, host: string, port: number): Error {
  const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const fix: Record<string, string> = {
    EADDRINUSE: `is already in use (EADDRINUSE): another process listens there. Stop it, or set PORT (or --port) to a free port`,
    EACCES: `cannot be bound (EACCES): ports below 1024 need privileges. Use a port above 1023 (PORT, --port)`,
    EADDRNOTAVAIL: `cannot be bound (EADDRNOTAVAIL): ${host} is not an address of this machine. Set HOST (or --host) to one of its addresses, or 0.0.0.0`,
    ENOTFOUND: `cannot be bound (ENOTFOUND): the host name ${host} does not resolve. Fix HOST (or --host)`,
  };
  const text = typeof code === 'string' ? fix[code] : undefined;
  if (!text) return e instanceof Error ? e : new Error(String(e));
  return new SluiceError('SLUICE_ERR_CONFIG', `${where} ${text}.`, { param: code === 'EADDRINUSE' || code === 'EACCES' ? 'port' : 'host' }, { cause: e });
}

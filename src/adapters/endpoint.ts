// What a start-up failure says about the service behind an adapter URL: which setting names it,
// the host and port it tried, why the connection failed in words an operator can act on, and
// what to do. Every adapter's connect maps its driver's failure through here, so the messages
// read alike whatever the driver.
import { SluiceError } from '../core/errors.ts';
import { redact, urlScheme } from './url-scheme.ts';

/** The service behind a URL, for messages: `service` is what the banner calls it, `field` the setting. */
export interface Endpoint {
  service: 'store' | 'limiter' | 'queue' | 'bus' | 'model';
  /** The environment variable an operator sets (DATABASE_URL, …). */
  field: string;
  url: string;
}

const DEFAULT_PORTS: Record<string, number> = {
  postgres: 5432, postgresql: 5432, redis: 6379, rediss: 6379, amqp: 5672, amqps: 5671, nats: 4222, http: 80, https: 443,
};

/** host:port the URL points at (the scheme's default port when it names none). */
export function hostPort(url: string): string {
  try {
    const u = new URL(url);
    const host = u.hostname || 'localhost';
    return `${host}:${u.port || DEFAULT_PORTS[urlScheme(url)] || '?'}`;
  } catch {
    return redact(url);
  }
}

/** Socket error codes in the order of what they tell an operator. */
const CAUSES: Record<string, string> = {
  ECONNREFUSED: 'connection refused (ECONNREFUSED): nothing listens on that port',
  ENOTFOUND: 'host name not found (ENOTFOUND): check the host name and DNS',
  EAI_AGAIN: 'host name lookup failed (EAI_AGAIN): DNS did not answer',
  EHOSTUNREACH: 'host unreachable (EHOSTUNREACH)',
  ENETUNREACH: 'network unreachable (ENETUNREACH)',
  ETIMEDOUT: 'timed out (ETIMEDOUT)',
  ECONNRESET: 'connection reset (ECONNRESET): something answered but closed the connection (a different service on that port, or TLS expected?)',
  EPIPE: 'connection closed while writing (EPIPE)',
  CERT_HAS_EXPIRED: 'TLS certificate expired',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed TLS certificate',
};

/** Every error in a chain (`cause`) and in AggregateErrors (Node's happy-eyeballs connect throws one). */
function errorsIn(err: unknown, seen = new Set<unknown>()): Array<{ code?: unknown; message?: unknown }> {
  if (typeof err !== 'object' || err === null || seen.has(err)) return [];
  seen.add(err);
  const e = err as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
  const nested = Array.isArray(e.errors) ? e.errors.flatMap((x) => errorsIn(x, seen)) : [];
  return [e, ...nested, ...errorsIn(e.cause, seen)];
}

/** Why a connection failed, from the first socket error code in the chain, else the first message. */
export function connectCause(err: unknown): string {
  const all = errorsIn(err);
  for (const e of all) if (typeof e.code === 'string' && CAUSES[e.code]) return CAUSES[e.code]!;
  // A driver's own connect timeout (NATS: TimeoutError "timeout").
  if (all.some((e) => (e as { name?: unknown }).name === 'TimeoutError')) return 'no answer within the connect timeout (SLUICE_CONNECT_TIMEOUT_MS)';
  const message = all.map((e) => (typeof e.message === 'string' ? e.message : '')).find((m) => m.length > 0);
  return message ?? String(err);
}

/** The first socket error code in the chain (ECONNREFUSED, …), for `details`. */
export function connectCode(err: unknown): string | undefined {
  for (const e of errorsIn(err)) if (typeof e.code === 'string' && /^E[A-Z_]+$/.test(e.code)) return e.code;
  return undefined;
}

/** SLUICE_ERR_UNAVAILABLE for a service that could not be reached: where, why, and what to do. */
export function unreachable(ep: Endpoint, err: unknown, fix?: string): SluiceError {
  const where = hostPort(ep.url);
  const todo = fix ?? `Check that it runs and accepts connections from this host, or fix ${ep.field}.`;
  const code = connectCode(err);
  return new SluiceError('SLUICE_ERR_UNAVAILABLE',
    `${ep.service}: cannot connect to ${where} (${ep.field}=${redact(ep.url)}): ${connectCause(err)}. ${todo}`,
    { param: ep.field, host: where, ...(code && { cause: code }) }, { cause: err });
}

/** A connect that did not finish within `ms`. */
export class ConnectTimeout extends Error {
  override readonly name = 'ConnectTimeout';
  constructor(readonly ms: number) { super(`no answer within ${ms} ms (SLUICE_CONNECT_TIMEOUT_MS)`); }
}

/**
 * Resolves with `connecting`, or rejects with a ConnectTimeout after `ms`. On a timeout `abandon`
 * runs, and a connection that still arrives later is handed to `discard`, so nothing a late
 * connect opens keeps the process alive.
 */
export async function withConnectTimeout<T>(
  ms: number, connecting: Promise<T>, abandon: () => void, discard: (late: T) => void = () => {},
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let timedOut = false;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => { timedOut = true; abandon(); reject(new ConnectTimeout(ms)); }, ms);
  });
  connecting.then((late) => { if (timedOut) discard(late); }, () => {});
  try {
    return await Promise.race([connecting, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

// Structured JSON logs (pino); every line about a request carries its request_id, and no line
// carries an API key: key headers are redacted and the api_key query parameter is cut from URLs.
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** Where a key can sit in a logged object: request headers under the usual names. */
const KEY_PATHS = ['authorization', 'x-api-key'].flatMap((h) => [
  `req.headers["${h}"]`, `request.headers["${h}"]`, `headers["${h}"]`, `err.headers["${h}"]`,
]);

/** The URL with the value of its api_key query parameter (the WebSocket's browser form) redacted. */
export function withoutKey(url: string): string {
  return url.replace(/([?&]api_key=)[^&#]*/gi, '$1[redacted]');
}

interface LoggedRequest { method?: string; url?: string; ip?: string; headers?: Record<string, unknown> }

/** A request as logged: method, key-free URL and address; never its headers. */
function requestForLog(req: LoggedRequest): Record<string, unknown> {
  return { method: req.method, url: typeof req.url === 'string' ? withoutKey(req.url) : req.url, remoteAddress: req.ip };
}

export function createLogger(level: string, role: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { role, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: KEY_PATHS, censor: '[redacted]' },
    serializers: { req: requestForLog, url: (u: unknown) => (typeof u === 'string' ? withoutKey(u) : u) },
  };
  return destination ? pino(options, destination) : pino(options);
}

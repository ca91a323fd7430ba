// Catalogue errors written straight to a socket, where no Fastify reply exists: a refused
// connection, or a request Node's parser rejected (timeout, oversized headers, malformed).
import { STATUS_CODES } from 'node:http';
import type { SluiceError } from '../core/errors.ts';
import { SECURITY_HEADERS } from './response-headers.ts';

/** A whole HTTP/1.1 response carrying the error's JSON body; the connection closes after it. */
export function rawErrorResponse(err: SluiceError): string {
  const body = JSON.stringify(err.toJSON());
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
    ...SECURITY_HEADERS,
    ...err.details?.headers,
  };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}`);
  return `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\n${lines.join('\r\n')}\r\n\r\n${body}`;
}

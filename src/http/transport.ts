// The HTTP transport's limits and the failures Node's parser reports before Fastify sees a request:
// request and header timeouts, oversized headers, malformed requests, client aborts.
import type { ServerOptions, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Config } from '../config.ts';
import { SluiceError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import { rawErrorResponse } from './raw-response.ts';

type HttpLimits = Pick<Config['http'], 'requestTimeoutMs' | 'headersTimeoutMs'>;

/**
 * Node enforces both timeouts by sweeping its connection list every connectionsCheckingInterval
 * (30 s by default), so a timeout fires up to one interval late. A quarter of the shorter
 * timeout bounds that lateness to 25 %, and 1 s at most keeps it small for long timeouts; the
 * sweep walks only the open connections, so once a second costs nothing measurable.
 */
export function connectionsCheckingIntervalMs(limits: HttpLimits): number {
  return Math.min(1000, Math.max(25, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 4)));
}

/**
 * The Fastify server options that carry the limits. Fastify sets `requestTimeout` itself on the
 * server it creates (overwriting Node's), while headersTimeout and connectionsCheckingInterval
 * only reach Node through the `http` options given to http.createServer.
 */
export function transportOptions(limits: HttpLimits): { requestTimeout: number; http: ServerOptions } {
  return {
    requestTimeout: limits.requestTimeoutMs,
    http: {
      requestTimeout: limits.requestTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      connectionsCheckingInterval: connectionsCheckingIntervalMs(limits),
    },
  };
}

/** A client that went away mid-request (Node's 'aborted' request error): not a server failure. */
export function isClientAbort(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'ECONNABORTED' || code === 'ERR_STREAM_PREMATURE_CLOSE';
}

/** Node's parser and timeout failures, mapped into the catalogue in one place. */
export function clientErrorOf(err: { code?: string }): SluiceError {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT': return new SluiceError('SLUICE_ERR_REQUEST_TIMEOUT');
    case 'HPE_HEADER_OVERFLOW': return new SluiceError('SLUICE_ERR_HEADERS_TOO_LARGE');
    default: return new SluiceError('SLUICE_ERR_BAD_REQUEST');
  }
}

/** Node keeps the response in flight on a socket here; its own clientError default looks at it too. */
type HttpSocket = Socket & { _httpMessage?: ServerResponse | null };

/**
 * Answers a request Node could not hand to Fastify with a catalogue body, then closes the socket.
 * Nothing is written when a response already started on it (the bytes would corrupt it). The
 * error is logged at debug without its rawPacket, which holds the request's bytes, keys included.
 */
export function clientErrorHandler(log: Logger): (err: Error & { code?: string }, socket: Socket) => void {
  return (err, socket) => {
    if (isClientAbort(err) || socket.destroyed) return;
    const answer = clientErrorOf(err);
    log.debug({ code: answer.code, cause: err.code }, 'client error');
    const inFlight = (socket as HttpSocket)._httpMessage;
    if (socket.writable && !inFlight?.headersSent) socket.write(rawErrorResponse(answer));
    socket.destroy();
  };
}

// Caps the open connections of one client address: a client that opens hundreds of idle or slow
// sockets must not exhaust the process's file descriptors and starve everyone else (/healthz
// included). Over the cap a connection gets one catalogue error and is closed before Node's HTTP
// parser ever sees it.
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { SluiceError } from '../core/errors.ts';
import { rawErrorResponse } from './raw-response.ts';

/** How long a refused socket may linger after its answer (a client still sending is cut off). */
const REFUSED_LINGER_MS = 1000;

/** Open connections per client address; the entry goes when its count drops to zero. */
export class ConnectionCounts {
  private readonly open = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Counts the connection in, or returns false when its address is at the cap. */
  admit(address: string): boolean {
    const n = this.open.get(address) ?? 0;
    if (this.max > 0 && n >= this.max) return false;
    this.open.set(address, n + 1);
    return true;
  }

  release(address: string): void {
    const n = (this.open.get(address) ?? 1) - 1;
    if (n <= 0) this.open.delete(address); else this.open.set(address, n);
  }

  /** Open connections of one address (tests and metrics). */
  of(address: string): number { return this.open.get(address) ?? 0; }
}

/**
 * Puts the cap in front of the server's own connection handling: Node's HTTP server handles a
 * socket in its 'connection' listener, so that listener is wrapped and only called for admitted
 * sockets. Returns the counts, or null when the cap is off (0).
 */
export function guardConnections(server: Server, maxPerAddress: number): ConnectionCounts | null {
  if (maxPerAddress <= 0) return null;
  const counts = new ConnectionCounts(maxPerAddress);
  const handlers = server.listeners('connection') as Array<(socket: Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? 'unknown';
    if (!counts.admit(address)) { refuse(socket); return; }
    socket.once('close', () => counts.release(address));
    for (const handle of handlers) handle.call(server, socket);
  });
  return counts;
}

/** Answers 503 and closes; what the client sends meanwhile is read and dropped so no reset eats the answer. */
function refuse(socket: Socket): void {
  socket.on('error', () => {});
  socket.resume();
  socket.end(rawErrorResponse(new SluiceError('SLUICE_ERR_TOO_MANY_CONNECTIONS')));
  const linger = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
  linger.unref();
  // The socket closes by itself once the client ends its side too (both halves done).
  socket.once('close', () => clearTimeout(linger));
}

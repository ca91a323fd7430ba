// Caps the open connections of the gateway: per client address, so that a client that opens
// hundreds of idle or slow sockets cannot starve everyone else (/healthz included); and per
// process, below the process's file-descriptor limit, so that client sockets can never take the
// descriptors the process needs for its own connections. At the descriptor limit a listener was
// answered 500: its socket took the last descriptor and the store's pool then failed to open a
// connection (connect EMFILE), and the workers' settles in the same process would fail the same
// way. Over either cap a connection gets one catalogue error (503) and is closed before Node's
// HTTP parser ever sees it.
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { SluiceError } from '../core/errors.ts';
import { rawErrorResponse } from './raw-response.ts';

/** How long a refused socket may linger after its answer (a client still sending is cut off). */
const REFUSED_LINGER_MS = 1000;
/**
 * Descriptors the automatic process-wide cap keeps for the process itself: its store pool, bus,
 * queue and limiter connections, model-backend connections, log and data files (a quarter of the
 * limit when that is smaller, so a low limit still leaves room for clients).
 */
export const FD_RESERVE = 256;
/** Seconds a client refused at the process cap is told to wait (listeners leave all the time). */
const RETRY_AFTER_S = 1;

/** Why a connection was refused: its address is at its cap, or the process is at its own. */
export type RefusalReason = 'address' | 'process';

/** Open connections in all and per client address; an address's entry goes when its count drops to zero. */
export class ConnectionCounts {
  private readonly open = new Map<string, number>();
  private all = 0;

  /** `maxPerAddress` and `maxTotal`: 0 = no cap. */
  constructor(private readonly maxPerAddress: number, private readonly maxTotal = 0) {}

  /** Counts the connection in, or says which cap it is over. */
  admit(address: string): RefusalReason | null {
    if (this.maxTotal > 0 && this.all >= this.maxTotal) return 'process';
    const n = this.open.get(address) ?? 0;
    if (this.maxPerAddress > 0 && n >= this.maxPerAddress) return 'address';
    this.open.set(address, n + 1);
    this.all++;
    return null;
  }

  release(address: string): void {
    const n = (this.open.get(address) ?? 1) - 1;
    if (n <= 0) this.open.delete(address); else this.open.set(address, n);
    this.all--;
  }

  /** Open connections of one address (tests and metrics). */
  of(address: string): number { return this.open.get(address) ?? 0; }

  /** Open connections in all. */
  get total(): number { return this.all; }
}

/**
 * The process-wide cap `auto` stands for: the soft "Max open files" limit of /proc/self/limits
 * less FD_RESERVE (at most a quarter of it). 0 (no cap) where the limit is unlimited or unknown.
 */
export function automaticCap(limits: string): number {
  const m = /^Max open files\s+(\d+)/m.exec(limits);
  if (!m) return 0;
  const limit = Number(m[1]);
  return Math.max(1, limit - Math.min(FD_RESERVE, Math.floor(limit / 4)));
}

/** The process-wide cap for the `maxConnections` setting: a number as is, `auto` from this process's descriptor limit. */
export function processCap(setting: number | 'auto'): number {
  if (setting !== 'auto') return setting;
  try { return automaticCap(readFileSync('/proc/self/limits', 'utf8')); } catch { return 0; }
}

export interface GuardOptions {
  /** Open connections per client address; 0 = no cap. */
  maxPerAddress: number;
  /** Open connections of the process; 0 = no cap. */
  maxTotal: number;
  /** Called for each refused connection (a metric). */
  onRefused?: (reason: RefusalReason) => void;
}

/**
 * Puts the caps in front of the server's own connection handling: Node's HTTP server handles a
 * socket in its 'connection' listener, so that listener is wrapped and only called for admitted
 * sockets. Returns the counts, or null when both caps are off (0).
 */
export function guardConnections(server: Server, opts: GuardOptions): ConnectionCounts | null {
  if (opts.maxPerAddress <= 0 && opts.maxTotal <= 0) return null;
  const counts = new ConnectionCounts(opts.maxPerAddress, opts.maxTotal);
  const handlers = server.listeners('connection') as Array<(socket: Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? 'unknown';
    const refused = counts.admit(address);
    if (refused) { opts.onRefused?.(refused); refuse(socket, refused); return; }
    socket.once('close', () => counts.release(address));
    for (const handle of handlers) handle.call(server, socket);
  });
  return counts;
}

/** Answers 503 and closes; what the client sends meanwhile is read and dropped so no reset eats the answer. */
function refuse(socket: Socket, reason: RefusalReason): void {
  socket.on('error', () => {});
  socket.resume();
  socket.end(rawErrorResponse(reason === 'address'
    ? new SluiceError('SLUICE_ERR_TOO_MANY_CONNECTIONS')
    : new SluiceError('SLUICE_ERR_CONNECTION_LIMIT', undefined, { headers: { 'retry-after': String(RETRY_AFTER_S) } })));
  const linger = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
  linger.unref();
  // The socket closes by itself once the client ends its side too (both halves done).
  socket.once('close', () => clearTimeout(linger));
}

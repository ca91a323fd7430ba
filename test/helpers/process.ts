// Real Sluice processes for crash and cluster tests: spawn `bin/sluice.mjs`, wait until it
// answers, kill it with any signal.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const a = s.address(); s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port')))); });
  });
}

/**
 * The first of `n` consecutive free ports, for a command that numbers its listeners from a base.
 * Taken below 32768, where neither Linux (32768-60999) nor macOS (49152-65535) hands out ephemeral
 * ports: an outgoing connection of a test running alongside cannot take one of them while the
 * command starts (freePort's ports, being ephemeral, could be).
 */
export async function freePortRun(n: number): Promise<number> {
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * (32_768 - 20_000 - n));
    if (await portsFree(base, n)) return base;
  }
}

async function portsFree(from: number, n: number): Promise<boolean> {
  for (let p = from; p < from + n; p++) if (!(await portFree(p))) return false;
  return true;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * How long a spawned process may take to answer. A bound on waiting, not a speed check: a first
 * start creates a PGlite cluster (~4 s alone), and CI runs two test files at once beside multi-process
 * soaks on two cores, where 20 s was seen to run out.
 */
export const START_TIMEOUT_MS = 60_000;

export interface SluiceProcess { child: ChildProcess; url: string; output(): string; kill(signal?: NodeJS.Signals): Promise<void> }

/**
 * `entry` is the script node runs: bin/sluice.mjs (the sources, under the tests' SLUICE_DEV=1) by
 * default. `wrap`: a command that execs node in the same process (`prlimit --nofile=300`).
 */
export async function spawnSluice(args: string[], env: Record<string, string>, opts: { port?: number; waitPath?: string | null; timeoutMs?: number; entry?: string; wrap?: string[] } = {}): Promise<SluiceProcess> {
  const port = opts.port ?? await freePort();
  const [command, ...before] = [...(opts.wrap ?? []), process.execPath];
  const child = spawn(command!, [...before, opts.entry ?? 'bin/sluice.mjs', ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c) => { out += c; });
  child.stderr!.on('data', (c) => { out += c; });
  const url = `http://127.0.0.1:${port}`;
  const proc: SluiceProcess = {
    child, url, output: () => out,
    kill: (signal = 'SIGTERM') => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
    }),
  };
  if (opts.waitPath === null) return proc;
  const deadline = Date.now() + (opts.timeoutMs ?? START_TIMEOUT_MS);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sluice exited with ${child.exitCode}:\n${out}`);
    try { if ((await fetch(url + (opts.waitPath ?? '/healthz'))).ok) return proc; } catch { /* not yet */ }
    if (Date.now() > deadline) { await proc.kill('SIGKILL'); throw new Error(`sluice did not start in time:\n${out}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/**
 * A private nats-server with JetStream on 127.0.0.1:port, storing in dir, for tests that restart
 * their broker without disturbing anyone else's. Resolves once it accepts connections.
 */
export async function startNatsServer(port: number, dir: string, timeoutMs = 10_000): Promise<ChildProcess> {
  const p = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir], { stdio: 'ignore' });
  const spawnError = new Promise<never>((_, reject) => p.once('error', reject));
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (p.exitCode !== null) throw new Error(`nats-server exited ${p.exitCode}`);
    if (await Promise.race([portOpen(port), spawnError])) return p;
    if (Date.now() > until) { p.kill('SIGKILL'); throw new Error(`nats-server did not open port ${port}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
}

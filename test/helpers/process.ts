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

export interface SluiceProcess { child: ChildProcess; url: string; output(): string; kill(signal?: NodeJS.Signals): Promise<void> }

export async function spawnSluice(args: string[], env: Record<string, string>, opts: { port?: number; waitPath?: string | null; timeoutMs?: number } = {}): Promise<SluiceProcess> {
  const port = opts.port ?? await freePort();
  const child = spawn(process.execPath, ['bin/sluice.mjs', ...args], {
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
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sluice exited with ${child.exitCode}:\n${out}`);
    try { if ((await fetch(url + (opts.waitPath ?? '/healthz'))).ok) return proc; } catch { /* not yet */ }
    if (Date.now() > deadline) { await proc.kill('SIGKILL'); throw new Error(`sluice did not start in time:\n${out}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
}

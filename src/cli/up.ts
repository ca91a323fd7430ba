// `sluice up`: a whole deployment on one machine for development and tests — N gateways on
// consecutive ports, then M workers and one ledger on the ports after them (every role serves
// /healthz, /readyz and /metrics), each a child `sluice start --role …` sharing the
// real services named by the environment. It migrates once before spawning (so children do not
// race), prefixes every child's output with its name, reports a child that dies and keeps the
// rest running, and stops everything (SIGTERM, then SIGKILL) on Ctrl-C or SIGTERM.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createStore } from '../adapters/store/factory.ts';
import { loadConfig, type Config } from '../config.ts';
import { resolveMasterKey } from '../core/api-keys.ts';
import { redact } from '../adapters/url-scheme.ts';
import { flags } from './flags.ts';

const USAGE = 'usage: sluice up [--gateways 2] [--workers 2] [--port 8080] [--no-ledger] [--stop-timeout-ms 10000]';
const BIN = fileURLToPath(new URL('../../bin/sluice.mjs', import.meta.url));

type Role = 'gateway' | 'worker' | 'ledger';

interface Member {
  name: string;
  role: Role;
  port: number;
  child: ChildProcess;
  exited: Promise<void>;
  /** Set when the child has exited: its code or the signal that ended it. */
  exit: string | null;
}

function count(raw: string | undefined, fallback: number, flag: string, min: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > 65535) throw new UsageError(`--${flag} must be an integer ≥ ${min} (got "${raw}")`);
  return n;
}

class UsageError extends Error {}

/** Why this configuration cannot be shared by several processes, or null when it can. */
export function unshareable(config: Config): string | null {
  if (config.queueUrl.startsWith('memory:')) return 'QUEUE_URL is memory://: separate processes cannot share an in-memory queue. Set QUEUE_URL=amqp://… or nats://…';
  if (config.busUrl.startsWith('memory:')) return 'BUS_URL is memory://: a gateway would never see tokens produced by a worker in another process. Set BUS_URL=redis://… or nats://…';
  if (config.databaseUrl.startsWith('pglite:')) return 'DATABASE_URL is pglite: PGlite is single-process. Set DATABASE_URL=postgres://…';
  return null;
}

function launch(name: string, role: Role, port: number): Member {
  const args = [BIN, 'start', '--role', role, '--port', String(port)];
  // Migrations already ran once, before any child started. Children run what this process runs:
  // the sources (under tsx) or the build (bin/sluice.mjs picks dist/ unless SLUICE_DEV=1).
  const fromSources = import.meta.url.endsWith('.ts');
  const child = spawn(process.execPath, args, { env: { ...process.env, SLUICE_MIGRATE: 'false', ...(fromSources && { SLUICE_DEV: '1' }) }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  const member: Member = { name, role, port, child, exit: null, exited: Promise.resolve() };
  member.exited = new Promise((resolve) => child.once('exit', (code, signal) => { member.exit = signal ?? `code ${code}`; resolve(); }));
  for (const [stream, out] of [[child.stdout, process.stdout], [child.stderr, process.stderr]] as const) {
    createInterface({ input: stream! }).on('line', (line) => out.write(`[${name}] ${line}\n`));
  }
  return member;
}

async function answers(url: string): Promise<boolean> {
  try { return (await fetch(url, { signal: AbortSignal.timeout(1000) })).ok; } catch { return false; }
}

function table(members: Member[], host: string): string {
  const rows = [['NAME', 'ROLE', 'PID', 'URL', 'STATUS'], ...members.map((m) => [
    m.name, m.role, String(m.child.pid ?? '-'), `http://${host}:${m.port}${m.role === 'gateway' ? '/v1' : '/metrics'}`, m.exit ? `exited (${m.exit})` : 'ready',
  ])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export async function up(args: string[]): Promise<number> {
  let gateways: number; let workers: number; let basePort: number; let ledger: boolean; let stopTimeoutMs: number;
  try {
    const { values } = flags(args, {
      gateways: { type: 'string' }, workers: { type: 'string' }, port: { type: 'string' }, 'no-ledger': { type: 'boolean' }, 'stop-timeout-ms': { type: 'string' },
    });
    gateways = count(values.gateways, 2, 'gateways', 0);
    workers = count(values.workers, 2, 'workers', 0);
    basePort = count(values.port, 8080, 'port', 1);
    stopTimeoutMs = count(values['stop-timeout-ms'], 10_000, 'stop-timeout-ms', 0);
    ledger = !values['no-ledger'];
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const config = loadConfig();
  const refusal = unshareable(config);
  if (refusal) { process.stderr.write(`sluice up: ${refusal}\n`); return 2; }
  if (config.limiterUrl.startsWith('memory:')) process.stderr.write('sluice up: warning: LIMITER_URL is memory://, so each gateway enforces quotas on its own (set LIMITER_URL=redis://…)\n');

  const store = await createStore(config.databaseUrl, { migrate: true });
  await store.close();
  // Children must agree on the master key: make the development key exist before any of them looks.
  resolveMasterKey(config);
  process.stdout.write(`[up] migrations applied to ${redact(config.databaseUrl)}; starting ${gateways} gateway(s), ${workers} worker(s)${ledger ? ', 1 ledger' : ''}\n`);

  const members: Member[] = [
    ...Array.from({ length: gateways }, (_, i) => launch(`gateway-${i + 1}`, 'gateway', basePort + i)),
    ...Array.from({ length: workers }, (_, i) => launch(`worker-${i + 1}`, 'worker', basePort + gateways + i)),
    ...(ledger ? [launch('ledger', 'ledger', basePort + gateways + workers)] : []),
  ];

  let stopping = false;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => { resolveDone = r; });
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    const alive = members.filter((m) => !m.exit);
    for (const m of alive) m.child.kill('SIGTERM');
    const force = setTimeout(() => { for (const m of alive) if (!m.exit) { process.stderr.write(`[up] ${m.name} did not stop in ${stopTimeoutMs} ms; SIGKILL\n`); m.child.kill('SIGKILL'); } }, stopTimeoutMs);
    await Promise.all(alive.map((m) => m.exited));
    clearTimeout(force);
    process.stdout.write('[up] all processes stopped\n');
    resolveDone(code);
  };
  const onSignal = (signal: NodeJS.Signals) => { process.stdout.write(`[up] ${signal}: stopping all processes\n`); void stopAll(0); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  for (const m of members) {
    void m.exited.then(() => {
      if (stopping) return;
      const left = members.filter((o) => !o.exit).length;
      process.stderr.write(`[up] ${m.name} (pid ${m.child.pid}) exited unexpectedly (${m.exit}); ${left} process(es) still running\n`);
      if (left === 0) void stopAll(1);
    });
  }

  const deadline = Date.now() + 120_000;
  const pending = new Set(members);
  while (pending.size && !stopping) {
    for (const m of [...pending]) {
      if (m.exit) { pending.delete(m); continue; }
      if (await answers(`http://${config.host}:${m.port}/healthz`)) pending.delete(m);
    }
    if (!pending.size) break;
    if (Date.now() > deadline) {
      process.stderr.write(`[up] ${[...pending].map((m) => m.name).join(', ')} did not answer /healthz within 120 s; stopping\n`);
      void stopAll(1);
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  if (!stopping) process.stdout.write(`${table(members, config.host)}\n`);
  return done;
}

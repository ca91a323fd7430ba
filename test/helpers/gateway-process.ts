// A whole Sluice gateway in a child process, for tests and benches that must survive its crash or
// measure its memory: embedded adapters, a config file for settings that have no environment
// variable (sse.maxBufferedBytes, tiers), and its resident set size read from /proc/<pid>/status.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MASTER_KEY } from './app.ts';
import { spawnSluice, type SluiceProcess } from './process.ts';

export interface GatewayProcess {
  url: string;
  pid: number;
  masterKey: string;
  /** Whether the process is still running (it has not exited or been killed). */
  alive(): boolean;
  /** How it ended, when it did: exit code or signal. */
  exitReason(): string | null;
  /** Its stdout and stderr so far (a crash's stack trace is here). */
  output(): string;
  /** Resident set size now, in MiB. */
  rssMiB(): number;
  /** Peak resident set size since start (VmHWM), in MiB. */
  peakRssMiB(): number;
  stop(): Promise<void>;
}

/** A memory field of /proc/<pid>/status in MiB (VmRSS: resident now, VmHWM: peak so far). */
export function procStatusMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) / 1024;
}

export interface GatewayOptions {
  /** Configuration written to a JSON file (SLUICE_CONFIG); the environment still wins. */
  config?: Record<string, unknown>;
  env?: Record<string, string>;
  /** A command that execs the gateway in its own process, e.g. `prlimit --nofile=300`. */
  wrap?: string[];
  /** 'disk': PGlite on disk in the gateway's temporary directory, whose cluster a child process
   *  creates, so the gateway's RSS at start is its own steady state (in memory, initdb's dead heaps
   *  are collected at some later moment, which would hide memory growth measured meanwhile). */
  store?: 'memory' | 'disk';
}

/** Starts `sluice start` (role all, PGlite in memory unless `store: 'disk'`, sim model) and waits until /healthz answers. */
export async function startGatewayProcess(opts: GatewayOptions = {}): Promise<GatewayProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-gw-'));
  const configFile = join(dir, 'sluice.config.json');
  writeFileSync(configFile, JSON.stringify(opts.config ?? {}));
  let proc: SluiceProcess;
  try {
    proc = await spawnSluice(['start'], {
      SLUICE_CONFIG: configFile, SLUICE_DATA_DIR: dir, DATABASE_URL: opts.store === 'disk' ? `pglite://${join(dir, 'db')}` : 'pglite://memory', SLUICE_MASTER_KEY: MASTER_KEY,
      SIM_TTFT_MS: '0', SIM_ITL_MS: '0', ...opts.env,
    }, { timeoutMs: 60_000, ...(opts.wrap && { wrap: opts.wrap }) });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const { child } = proc;
  const pid = child.pid!;
  return {
    url: proc.url, pid, masterKey: MASTER_KEY,
    alive: () => child.exitCode === null && child.signalCode === null,
    exitReason: () => (child.exitCode !== null ? `exit code ${child.exitCode}` : child.signalCode !== null ? `signal ${child.signalCode}` : null),
    output: proc.output,
    rssMiB: () => procStatusMiB(pid, 'VmRSS'),
    peakRssMiB: () => procStatusMiB(pid, 'VmHWM'),
    stop: async () => {
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await proc.kill('SIGTERM');
      clearTimeout(killer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// promtool (Prometheus' own checker) for the tests of what Prometheus reads: /metrics and the
// alerting rules. Like a service (services.ts): a test runs where promtool is installed, is skipped
// with a visible message elsewhere, and fails under CI=true (.ci/run installs it there).
import { spawn, spawnSync } from 'node:child_process';

const PROMTOOL = process.env.PROMTOOL ?? 'promtool';

let found: boolean | undefined;

/** Options for `describe(name, promtoolSuite(), …)`: `{}` with promtool, `{ skip: reason }` without; throws under CI=true. */
export function promtoolSuite(): { skip?: string } {
  found ??= spawnSync(PROMTOOL, ['--version'], { stdio: 'ignore' }).status === 0;
  if (found) return {};
  const reason = `${PROMTOOL} is not installed (Debian: apt-get install prometheus)`;
  if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: .ci/run installs it; a missing promtool fails the run)`);
  console.warn(`SKIP: ${reason}; install it to run these tests`);
  return { skip: reason };
}

export interface PromtoolResult { code: number | null; stdout: string; stderr: string }

/** Runs promtool with the arguments, `input` on its standard input. */
export function promtool(args: string[], input?: string): Promise<PromtoolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

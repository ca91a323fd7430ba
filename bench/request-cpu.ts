// CPU time a Sluice process spends per chat request, and (PROFILE=1) where it goes: the figure to
// decide on when the machine is shared, since a req/s ratio moves with whatever else runs on it.
//
// Each Sluice (this checkout, and with BASELINE_DIR an earlier one beside it) serves the realistic
// chat body of bench/routing.ts over the shared upstream simulator, with a user key (accounting
// on), at concurrency C. A round sends REQUESTS to each Sluice in turn (rotated order) and reads the
// process's user + system CPU time from /proc/PID/stat before and after: CPU ms per request, all
// threads included. With PROFILE=1 each Sluice runs under `node --cpu-prof`; after the run the
// samples inside the measured windows (main thread only) are summed by self time per file and per
// function, in CPU µs per request.
//
// env: ROUNDS (3), REQUESTS per Sluice per round (2000), CONCURRENCY (8), TOKENS (64), ITL_MS (0: the
//      upstream's delay between tokens; 20 with CONCURRENCY=1000 RAMP_MS=1000 profiles the slow-streams case),
//      RAMP_MS (0: spread the callers' starts over this long), ALLOW_ERRORS (0; 1 logs failed requests
//      instead of stopping), STREAM (1;
//      0 for non-streaming), TOOLS (1; 0 sends the body without its tools), MODE (direct | queued), BASELINE_DIR, PROFILE (0 | 1), PROFILE_INTERVAL_US
//      (250: the sampling interval), TOP (25 rows per table)
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { bearer, cpuMs, createUserKey, sleep, log, main, makePoster, median, r2, realisticChatBody, REPO, startSluice, startUpstream, table, tmpDir, type Proc } from './lib.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const N = Number(process.env.REQUESTS ?? 2000);
const C = Number(process.env.CONCURRENCY ?? 8);
const TOKENS = Number(process.env.TOKENS ?? 64);
const ITL_MS = process.env.ITL_MS ?? '0';
/** The callers' first requests spread over this long (a burst of a thousand connects overflows listen backlogs). */
const RAMP_MS = Number(process.env.RAMP_MS ?? 0);
/** Profile a case that fails some requests (a saturated machine) instead of stopping. */
const ALLOW_ERRORS = process.env.ALLOW_ERRORS === '1';
const STREAM = process.env.STREAM !== '0';
const MODE = process.env.MODE ?? 'direct';
const BASELINE_DIR = process.env.BASELINE_DIR;
const PROFILE = process.env.PROFILE === '1';
const TOP = Number(process.env.TOP ?? 25);
const INTERVAL_US = Number(process.env.PROFILE_INTERVAL_US ?? 250);

/** CLOCK_MONOTONIC in µs: the clock of a V8 CPU profile's timestamps on Linux. */
const monoUs = (): number => Number(process.hrtime.bigint() / 1000n);

interface Sluice { name: string; dir: string; proc: Proc; key: string; profDir: string; windows: [number, number][]; cpu: number[]; rps: number[] }

async function load(s: Sluice, body: string, requests: number): Promise<{ ok: number; errors: number; firstError: string; seconds: number }> {
  const poster = makePoster(`${s.proc.url}/v1/chat/completions`, { ...bearer(s.key), 'x-sluice-mode': MODE }, C);
  let next = 0, ok = 0, errors = 0, firstError = '';
  const t0 = performance.now();
  await Promise.all(Array.from({ length: C }, async (_, i) => {
    if (RAMP_MS > 0) await sleep((i * RAMP_MS) / C);
    while (next++ < requests) {
      const r = await poster.post(body);
      if (r.status === 200 && (STREAM ? r.body.includes('data: [DONE]') : r.body.includes('"content":"tok'))) ok++;
      else { errors++; firstError ||= `${r.status} ${r.body.slice(0, 200)}`; }
    }
  }));
  poster.close();
  return { ok, errors, firstError, seconds: (performance.now() - t0) / 1000 };
}

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface Profile { nodes: ProfileNode[]; startTime: number; samples: number[]; timeDeltas: number[] }

/**
 * Time (µs) inside the windows: self time by file and by function, and inclusive time (the
 * function anywhere on the stack, once per sample) of this checkout's own functions.
 */
function selfTimes(profile: Profile, windows: [number, number][], root: string): { byFile: Map<string, number>; byFn: Map<string, number>; inclusive: Map<string, number>; total: number } {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const byFile = new Map<string, number>(), byFn = new Map<string, number>(), inclusive = new Map<string, number>();
  let t = profile.startTime, total = 0;
  const place = (url: string) => {
    if (!url) return '(native / vm)';
    const path = url.startsWith('file://') ? decodeURIComponent(new URL(url).pathname) : url;
    const nm = path.lastIndexOf('node_modules/');
    if (nm >= 0) { const rest = path.slice(nm + 13).split('/'); return `npm:${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`; }
    return path.startsWith(root) ? relative(root, path) : path;
  };
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]!;
    const dt = profile.timeDeltas[i + 1] ?? 0; // a sample stands for the time until the next one
    if (!windows.some(([a, b]) => t >= a && t < b)) continue;
    const n = nodes.get(profile.samples[i]!)!;
    const file = place(n.callFrame.url);
    const name = (m: ProfileNode) => `${m.callFrame.functionName || '(anonymous)'} ${place(m.callFrame.url)}`;
    byFile.set(file, (byFile.get(file) ?? 0) + dt);
    byFn.set(name(n), (byFn.get(name(n)) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const m = nodes.get(id)!;
      // The checkout's own code: its sources, or the dist/ build that `sluice start` runs.
      if (!/\/(src|dist)\//.test(m.callFrame.url) || m.callFrame.url.includes('node_modules')) continue;
      const k = name(m);
      if (!m.callFrame.functionName || seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
    }
    total += dt;
  }
  return { byFile, byFn, inclusive, total };
}

main('request-cpu', 20 * 60_000, async () => {
  const upstream = await startUpstream({ TOKENS: String(TOKENS), ITL_MS });
  const targets: [string, string][] = [['current', REPO]];
  if (BASELINE_DIR) {
    if (!existsSync(join(BASELINE_DIR, 'bin', 'sluice.mjs'))) throw new Error(`BASELINE_DIR=${BASELINE_DIR} holds no bin/sluice.mjs`);
    targets.push(['baseline', BASELINE_DIR]);
  }
  const sluices: Sluice[] = [];
  for (const [name, dir] of targets) {
    const profDir = tmpDir(`sluice-prof-${name}-`);
    mkdirSync(profDir, { recursive: true });
    const proc = await startSluice({ MODEL_URL: `${upstream.url}/v1` }, `sluice-${name}`, dir, PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-interval=${INTERVAL_US}`] : []);
    sluices.push({ name, dir, proc, key: await createUserKey(proc), profDir, windows: [], cpu: [], rps: [] });
  }
  // TOOLS=0: the same body without its tools, which a Sluice from before the whole chat surface
  // (issue #12) dropped rather than forwarded: both versions then do the same work per request.
  const full = realisticChatBody(STREAM, TOKENS);
  const body = process.env.TOOLS === '0' ? JSON.stringify({ ...JSON.parse(full), tools: undefined }) : full;
  log(`${STREAM ? 'streaming' : 'non-streaming'}, ${MODE} mode, concurrency ${C}, ${N} requests per Sluice per round, ${ROUNDS} rounds${PROFILE ? ', under --cpu-prof' : ''}`);
  for (const s of sluices) {
    const w = await load(s, body, 300);
    if (w.errors) { if (!ALLOW_ERRORS) throw new Error(`${s.name} warm-up: ${w.errors} errors (${w.firstError})`); log(`${s.name} warm-up: ${w.errors} errors (${w.firstError})`); }
  }
  for (let r = 1; r <= ROUNDS; r++) {
    const order = sluices.map((_, i) => sluices[(i + r - 1) % sluices.length]!);
    for (const s of order) {
      const c0 = cpuMs(s.proc.pid), t0 = monoUs();
      const x = await load(s, body, N);
      const t1 = monoUs(), c1 = cpuMs(s.proc.pid);
      if (x.errors) { if (!ALLOW_ERRORS) throw new Error(`${s.name}: ${x.errors} errors (${x.firstError})`); log(`${s.name}: ${x.errors} errors (${x.firstError})`); }
      s.windows.push([t0, t1]);
      s.cpu.push(r2((c1 - c0) / x.ok));
      s.rps.push(r2(x.ok / x.seconds));
      log(`round ${r} ${s.name}: ${s.cpu.at(-1)} CPU ms/request, ${s.rps.at(-1)} req/s`);
    }
  }
  const load1 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  console.log(`\nCPU per request, ${STREAM ? 'streaming' : 'non-streaming'} ${MODE}, concurrency ${C}, ${TOKENS}-token replies, realistic body, user key; load average after: ${load1}`);
  console.log(table(sluices.map((s) => ({ sluice: s.name, ...Object.fromEntries(s.cpu.map((v, i) => [`r${i + 1} CPU ms/req`, v])), 'median CPU ms/req': median(s.cpu), 'median req/s': median(s.rps) }))));
  if (sluices.length === 2) console.log(`current / baseline CPU per request, per round: ${sluices[0]!.cpu.map((v, i) => r2(v / sluices[1]!.cpu[i]!)).join(' ')}`);

  if (!PROFILE) return;
  for (const s of sluices) await s.proc.stop(); // the profile is written at exit
  for (const s of sluices) {
    const file = readdirSync(s.profDir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) { log(`${s.name}: no profile written in ${s.profDir}`); continue; }
    const { byFile, byFn, inclusive, total } = selfTimes(JSON.parse(readFileSync(join(s.profDir, file), 'utf8')) as Profile, s.windows, s.dir);
    const requests = N * s.windows.length;
    const rows = (m: Map<string, number>, col: string) => [...m].sort((a, b) => b[1] - a[1]).slice(0, TOP)
      .map(([k, us]) => ({ [col]: k, 'self µs/req': r2(us / requests), share: `${r2((100 * us) / total)} %` }));
    console.log(`\n${s.name}: main-thread samples in the measured windows, ${r2(total / requests)} µs per request; by file:`);
    console.log(table(rows(byFile, 'file')));
    console.log(`\n${s.name}: by function:`);
    console.log(table(rows(byFn, 'function')));
    console.log(`\n${s.name}: this checkout's named functions, inclusive (self + callees):`);
    console.log(table(rows(inclusive, 'function').map(({ share: _, ...r }) => r)));
  }
});

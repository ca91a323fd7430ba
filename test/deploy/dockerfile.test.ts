// The container image's rules, checked on deploy/Dockerfile itself. No container runtime runs on
// this machine (no Docker daemon, and no registry to pull a base image from) and hadolint is not
// in Debian's archive, so these checks stand in for a build: a pinned Node 22 base, a build stage
// that compiles, runtime dependencies only (`npm ci --omit=dev`), the compiled CLI as entry point,
// a non-root user, a health check, and a build context that holds every file a COPY names.
// The compose file is validated with docker-compose 1.29 (Debian's) when it is installed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface Instruction { keyword: string; args: string; line: number }
interface Stage { from: string; name?: string; steps: Instruction[] }

/** Instructions with continuation lines joined and comments dropped. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (buf === '' && (line === '' || line.startsWith('#'))) return;
    if (buf === '') start = i + 1;
    if (line.startsWith('#')) return;
    buf += `${line.replace(/\\$/, '')} `;
    if (!line.endsWith('\\')) {
      const [keyword, ...rest] = buf.trim().split(/\s+/);
      out.push({ keyword: keyword!.toUpperCase(), args: rest.join(' '), line: start });
      buf = '';
    }
  });
  return out;
}

function stages(all: Instruction[]): { args: Record<string, string>; stages: Stage[] } {
  const args: Record<string, string> = {};
  const list: Stage[] = [];
  for (const ins of all) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      assert.ok(m, `line ${ins.line}: FROM ${ins.args}`);
      list.push({ from: m[1]!, ...(m[2] && { name: m[2] }), steps: [] });
    } else if (list.length === 0 && ins.keyword === 'ARG') {
      const [name, value] = ins.args.split('=');
      if (value !== undefined) args[name!] = value;
    } else {
      list.at(-1)?.steps.push(ins);
    }
  }
  return { args, stages: list };
}

const dockerfile = readFileSync('deploy/Dockerfile', 'utf8');
const parsed = stages(instructions(dockerfile));
const image = (from: string) => from.replace(/^\$\{(\w+)\}$/, (_, name: string) => parsed.args[name] ?? from);
const final = parsed.stages.at(-1)!;
const step = (s: Stage, keyword: string) => s.steps.filter((i) => i.keyword === keyword);

describe('deploy/Dockerfile', () => {
  it('every stage starts from node:22-bookworm-slim pinned by digest (no floating tag, no latest)', () => {
    assert.ok(parsed.stages.length >= 2, 'multi-stage');
    for (const s of parsed.stages) {
      const ref = image(s.from);
      assert.match(ref, /^node:22-bookworm-slim@sha256:[0-9a-f]{64}$/, `FROM ${s.from} → ${ref}`);
    }
    assert.doesNotMatch(dockerfile, /:latest\b/);
  });

  it('a build stage installs everything and compiles; the image gets its dist/, not src/', () => {
    const build = parsed.stages.find((s) => step(s, 'RUN').some((r) => /\bnpm run build\b/.test(r.args)));
    assert.ok(build?.name, 'a named stage runs npm run build');
    assert.ok(step(build, 'RUN').some((r) => /\bnpm ci\b/.test(r.args) && !/--omit=dev/.test(r.args)), 'the build stage installs dev dependencies (TypeScript)');
    const copies = step(final, 'COPY');
    assert.ok(copies.some((c) => c.args.includes(`--from=${build.name}`) && /\/app\/dist\s+\.\/dist$/.test(c.args)), 'dist/ comes from the build stage');
    assert.ok(!copies.some((c) => /(^|\s)src\b/.test(c.args.replace(/--\S+/g, ''))), 'no sources in the image');
  });

  it('the image installs runtime dependencies only (npm ci --omit=dev) and never mentions tsx', () => {
    const fromStage = new Map(parsed.stages.filter((s) => s.name).map((s) => [s.name!, s]));
    const modules = step(final, 'COPY').find((c) => /\/app\/node_modules\s+\.\/node_modules$/.test(c.args));
    assert.ok(modules, 'node_modules is copied into the image');
    const source = fromStage.get(/--from=(\S+)/.exec(modules.args)?.[1] ?? '');
    assert.ok(source, 'node_modules comes from a named stage');
    assert.ok(step(source, 'RUN').some((r) => /\bnpm ci\b.*--omit=dev/.test(r.args)), `stage ${source.name} runs npm ci --omit=dev`);
    assert.ok(!step(final, 'RUN').some((r) => /\bnpm (ci|install)\b/.test(r.args)), 'the final stage installs nothing itself');
    assert.doesNotMatch(dockerfile.replace(/^#.*$/gm, ''), /\btsx\b/);
  });

  it('runs the compiled CLI as a non-root user, with a health check', () => {
    const entry = step(final, 'ENTRYPOINT').at(-1);
    assert.ok(entry);
    assert.deepEqual(JSON.parse(entry.args), ['node', 'dist/cli/main.js']);
    assert.deepEqual(JSON.parse(step(final, 'CMD').at(-1)!.args), ['start']);
    const user = step(final, 'USER').at(-1);
    assert.ok(user && user.line < entry.line, 'USER before ENTRYPOINT');
    const [uid] = user.args.split(':');
    assert.match(uid!, /^\d+$/, 'numeric uid (Kubernetes runAsNonRoot can verify it)');
    assert.notEqual(Number(uid), 0, 'not root');
    const health = step(final, 'HEALTHCHECK').at(-1);
    assert.ok(health && /CMD \["node", "deploy\/healthcheck\.mjs"\]/.test(health.args), 'HEALTHCHECK runs healthcheck.mjs');
    assert.ok(existsSync('deploy/healthcheck.mjs'));
  });

  it('the build context (Dockerfile.dockerignore allow-list) holds every file a COPY takes from it', () => {
    const allowed = readFileSync('deploy/Dockerfile.dockerignore', 'utf8').split('\n')
      .map((l) => l.trim()).filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    const fromContext = parsed.stages.flatMap((s) => step(s, 'COPY')).filter((c) => !/--from=/.test(c.args));
    assert.ok(fromContext.length > 0);
    for (const c of fromContext) {
      const paths = c.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1);
      for (const p of paths) {
        assert.ok(allowed.includes(p), `line ${c.line}: COPY ${p} is not in the dockerignore allow-list`);
        assert.ok(existsSync(p), `line ${c.line}: ${p} does not exist`);
      }
    }
  });
});

describe('deploy/compose.yaml', () => {
  it('has no top-level name: (Debian\'s docker-compose 1.29 refuses it)', () => {
    assert.doesNotMatch(readFileSync('deploy/compose.yaml', 'utf8'), /^name:/m);
  });

  it('validates with docker-compose 1.29 when it is installed', async (t) => {
    let version: string;
    try { version = (await run('docker-compose', ['version', '--short'])).stdout.trim(); } catch {
      t.skip('docker-compose is not installed (apt-get install docker-compose to run this check)');
      return;
    }
    const { stderr } = await run('docker-compose', ['-f', 'deploy/compose.yaml', 'config', '-q'], { env: { ...process.env, SLUICE_MASTER_KEY: 'x'.repeat(24) } });
    assert.equal(stderr.trim(), '', `docker-compose ${version}: ${stderr}`);
  });
});

// The edge deployment files, checked on the files themselves: the nats-server hub and leaf
// configurations (and the leaf configuration in the Kubernetes ConfigMap) pass `nats-server -t`
// when the binary is here; the compose profile `edge` has a leaf per edge, each edge reading its
// own leaf through the hub's domain; the Kubernetes edge manifests are wired together (Service to
// pods, ConfigMaps and ports that exist) and their configuration is one an edge starts with.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config.ts';
import { natsServerAvailable, NATS_SERVER } from '../helpers/nats-leaf.ts';

const run = promisify(execFile);

type Doc = { apiVersion?: string; kind?: string; metadata?: { name?: string; labels?: Record<string, string> }; spec?: any; data?: Record<string, string> };
const docsOf = (path: string): Doc[] => parseAllDocuments(readFileSync(path, 'utf8')).map((d) => {
  assert.deepEqual(d.errors.map((e) => e.message), [], `${path}: YAML errors`);
  return d.toJS() as Doc;
}).filter((d) => d !== null);

/** `nats-server -t` on a config: resolves if valid, rejects with its message otherwise. */
async function natsCheck(conf: string, env: Record<string, string>): Promise<void> {
  await run(NATS_SERVER, ['-t', '-c', conf], { env: { PATH: process.env.PATH ?? '', ...env } });
}

function natsBinary(t: { skip(msg: string): void }): boolean {
  if (natsServerAvailable()) return true;
  if (process.env.CI === 'true') throw new Error(`nats-server is not at ${NATS_SERVER} (CI=true: required)`);
  t.skip(`nats-server is not at ${NATS_SERVER}`);
  return false;
}

describe('deploy/nats', () => {
  it('hub.conf: JetStream in domain hub, a leafnode listener, monitoring', async (t) => {
    const text = readFileSync('deploy/nats/hub.conf', 'utf8');
    assert.match(text, /jetstream\s*\{[^}]*domain:\s*hub/);
    assert.match(text, /leafnodes\s*\{[^}]*listen:\s*0\.0\.0\.0:7422/);
    assert.match(text, /^http:/m);
    if (natsBinary(t)) await natsCheck('deploy/nats/hub.conf', { NATS_SERVER_NAME: 'hub' });
  });

  it('leaf.conf: no JetStream of its own, one remote (the hub); invalid without its variables', async (t) => {
    const text = readFileSync('deploy/nats/leaf.conf', 'utf8');
    assert.doesNotMatch(text, /^\s*jetstream/m, 'the leaf must not hold a stream: the edge reads the hub\'s through the domain');
    assert.match(text, /remotes:\s*\[\s*\{\s*url:\s*\$NATS_HUB_LEAF_URL/);
    if (!natsBinary(t)) return;
    await natsCheck('deploy/nats/leaf.conf', { NATS_SERVER_NAME: 'leaf-1', NATS_HUB_LEAF_URL: 'nats-leaf://127.0.0.1:7422' });
    await assert.rejects(natsCheck('deploy/nats/leaf.conf', { NATS_SERVER_NAME: 'leaf-1' }), /NATS_HUB_LEAF_URL/);
  });
});

describe('deploy/compose.yaml, profile edge', () => {
  const compose = parse(readFileSync('deploy/compose.yaml', 'utf8'), { merge: true }) as { services: Record<string, any> };
  const services = compose.services;

  it('the nats service is the hub (hub.conf mounted)', () => {
    const nats = services.nats;
    assert.deepEqual(nats.command, ['-c', '/etc/nats/hub.conf']);
    assert.ok(nats.volumes.includes('./nats/hub.conf:/etc/nats/hub.conf:ro'));
    assert.ok(statSync('deploy/nats/hub.conf').isFile());
  });

  it('two edges, each in role edge, reading events through its own leaf via the hub domain', () => {
    const edges = Object.entries(services).filter(([, s]) => s.environment?.SLUICE_ROLE === 'edge');
    assert.equal(edges.length, 2);
    const leafsUsed = new Set<string>();
    for (const [name, s] of edges) {
      assert.deepEqual(s.profiles, ['edge'], `${name}: only in the edge profile`);
      const bus = new URL(s.environment.BUS_URL);
      assert.equal(bus.protocol, 'nats:');
      assert.equal(bus.searchParams.get('domain'), 'hub');
      const leaf = services[bus.hostname];
      assert.ok(leaf, `${name}: no service ${bus.hostname}`);
      assert.deepEqual(leaf.profiles, ['edge']);
      assert.deepEqual(leaf.command, ['-c', '/etc/nats/leaf.conf']);
      assert.ok(leaf.volumes.includes('./nats/leaf.conf:/etc/nats/leaf.conf:ro'));
      assert.equal(leaf.environment.NATS_HUB_LEAF_URL, 'nats-leaf://nats:7422');
      assert.ok(s.depends_on[bus.hostname], `${name} waits for its leaf`);
      leafsUsed.add(bus.hostname);
      // The edge's environment (with compose's defaults filled in) is a configuration an edge starts with.
      const env = Object.fromEntries(Object.entries(s.environment as Record<string, string>).map(([k, v]) => [k, String(v).replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1').replace(/\$\{[A-Z_]+:\?[^}]*\}/g, 'x'.repeat(24))]));
      env.QUEUE_URL = 'amqp://sluice:sluice@rabbitmq:5672';
      const c = loadConfig({ ...env, SLUICE_CONFIG: undefined });
      assert.equal(c.role, 'edge');
    }
    assert.equal(leafsUsed.size, 2, 'one leaf per edge');
  });
});

describe('deploy/k8s/edge', () => {
  const dir = 'deploy/k8s/edge';
  const kustomization = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as { resources: string[]; namespace: string };
  const docs = kustomization.resources.flatMap((r) => docsOf(join(dir, r)));
  const find = (kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata?.name === name);

  it('the kustomization lists files that exist, and every document has apiVersion, kind and name', () => {
    for (const r of kustomization.resources) assert.ok(statSync(join(dir, r)).isFile(), r);
    for (const d of docs) assert.ok(d.apiVersion && d.kind && d.metadata?.name, `a ${d.kind ?? '?'} without apiVersion, kind or name`);
    assert.ok(find('Namespace', kustomization.namespace));
  });

  it('the edge Deployment runs role edge with its ConfigMap, and its Service selects its pods', () => {
    const dep = find('Deployment', 'sluice-edge');
    assert.ok(dep);
    const pod = dep.spec.template;
    const c = pod.spec.containers[0];
    assert.deepEqual(c.env, [{ name: 'SLUICE_ROLE', value: 'edge' }]);
    const cm = c.envFrom.find((e: any) => e.configMapRef)?.configMapRef.name;
    assert.ok(find('ConfigMap', cm), `no ConfigMap ${cm}`);
    assert.ok(c.envFrom.some((e: any) => e.secretRef?.name === 'sluice-edge-secrets'));
    const svc = find('Service', 'sluice-edge');
    assert.ok(svc);
    for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(pod.metadata.labels[k], v);
    assert.ok(c.ports.some((p: any) => p.name === svc.spec.ports[0].targetPort));
    assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  });

  it("the edge's BUS_URL names the leaf Service's client port and the hub domain; the config is one an edge starts with", () => {
    const data = find('ConfigMap', 'sluice-edge-config')!.data!;
    const bus = new URL(data.BUS_URL!);
    assert.equal(bus.searchParams.get('domain'), 'hub');
    const leafSvc = find('Service', bus.hostname);
    assert.ok(leafSvc, `no Service ${bus.hostname}`);
    assert.ok(leafSvc.spec.ports.some((p: any) => p.port === Number(bus.port)));
    // The Secret's URLs (origin services) as an operator would set them.
    const secret = { DATABASE_URL: 'postgres://sluice:x@origin-db:5432/sluice', QUEUE_URL: 'amqp://sluice:x@origin-mq:5672', LIMITER_URL: 'redis://origin-redis:6379/0', SLUICE_MASTER_KEY: 'x'.repeat(24) };
    const c = loadConfig({ ...data, ...secret, SLUICE_ROLE: 'edge', SLUICE_CONFIG: undefined });
    assert.equal(c.role, 'edge');
    assert.equal(c.busIdleProbeMs, 2000);
    assert.equal(c.migrateOnStart, false);
    // The edge admits: its inspection settings are explicit, to be kept equal to the origin's.
    assert.deepEqual([data.INSPECTION_MODE, data.INSPECTION_PROMPTS], [c.inspection.mode, c.inspection.prompts]);
  });

  it("the leaf Deployment mounts its ConfigMap's leaf.conf, which nats-server accepts", async (t) => {
    const dep = find('Deployment', 'sluice-nats-leaf');
    assert.ok(dep);
    const c = dep.spec.template.spec.containers[0];
    assert.deepEqual(c.args, ['-c', '/etc/nats/leaf.conf']);
    const volume = dep.spec.template.spec.volumes.find((v: any) => v.name === c.volumeMounts[0].name);
    const cm = find('ConfigMap', volume.configMap.name);
    const conf = cm?.data?.['leaf.conf'];
    assert.ok(conf);
    assert.doesNotMatch(conf, /jetstream/);
    assert.match(conf, /nats-leaf:\/\/[^"]+:7422/);
    if (!natsBinary(t)) return;
    const tmp = mkdtempSync(join(tmpdir(), 'sluice-leafconf-'));
    try {
      writeFileSync(join(tmp, 'leaf.conf'), conf);
      await natsCheck(join(tmp, 'leaf.conf'), { NATS_SERVER_NAME: 'sluice-nats-leaf-0' });
    } finally { rmSync(tmp, { recursive: true, force: true }); }
  });
});

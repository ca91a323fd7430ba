// The Kubernetes manifests parse, and scraping reaches every role: each role's Deployment has a
// Service exposing the port its ServiceMonitor names, so the metrics the KEDA token-rate trigger
// queries (counted in workers, where requests settle) are scraped from the pods that export them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { promtool, promtoolSuite } from '../helpers/promtool.ts';

type Doc = { apiVersion?: string; kind?: string; metadata?: { name?: string; labels?: Record<string, string> }; spec?: Record<string, unknown>; [k: string]: unknown };

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(name) ? [path] : [];
  });
}

function load(path: string): Doc[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  for (const d of docs) assert.deepEqual(d.errors.map((e) => e.message), [], `${path}: YAML errors`);
  return docs.map((d) => d.toJS() as Doc).filter((d) => d !== null);
}

const manifests = yamlFiles('deploy/k8s').flatMap((file) => load(file).map((doc) => ({ file, doc })));
const ofKind = (kind: string) => manifests.filter((m) => m.doc.kind === kind).map((m) => m.doc);
const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) => Object.entries(selector).every(([k, v]) => labels[k] === v);

describe('deploy/k8s manifests', () => {
  it('every file parses and every document names its apiVersion, kind and name', () => {
    assert.ok(manifests.length > 10);
    for (const { file, doc } of manifests) {
      if (file.endsWith('kustomization.yaml')) continue;
      assert.ok(doc.apiVersion && doc.kind && doc.metadata?.name, `${file}: a ${doc.kind ?? '?'} without apiVersion, kind or metadata.name`);
    }
  });

  it('the kustomization lists files that exist', () => {
    const k = load('deploy/k8s/kustomization.yaml')[0] as { resources: string[] };
    for (const r of k.resources) assert.ok(statSync(join('deploy/k8s', r)).isFile(), r);
  });

  it('each role is scraped: a ServiceMonitor selects a Service of its pods on a port the pods expose', () => {
    const deployments = ofKind('Deployment');
    const services = ofKind('Service');
    const monitors = ofKind('ServiceMonitor');
    for (const role of ['gateway', 'worker', 'ledger']) {
      const dep = deployments.find((d) => d.metadata?.name === `sluice-${role}`);
      assert.ok(dep, `no Deployment sluice-${role}`);
      const template = (dep.spec as { template: { metadata: { labels: Record<string, string> }; spec: { containers: { ports?: { name: string; containerPort: number }[] }[] } } }).template;
      const podPorts = template.spec.containers.flatMap((c) => c.ports ?? []);
      const monitor = monitors.find((m) => matches((m.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels, { 'app.kubernetes.io/name': 'sluice', 'app.kubernetes.io/component': role }));
      assert.ok(monitor, `no ServiceMonitor for ${role}`);
      const endpointPort = (monitor.spec as { endpoints: { port: string; path: string }[] }).endpoints[0]!;
      assert.equal(endpointPort.path, '/metrics');
      const svc = services.find((s) => matches((monitor.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels, s.metadata?.labels));
      assert.ok(svc, `no Service the ${role} ServiceMonitor selects`);
      const svcSpec = svc.spec as { selector: Record<string, string>; ports: { name: string; targetPort: string | number }[] };
      assert.ok(matches(svcSpec.selector, template.metadata.labels), `Service ${svc.metadata?.name} does not select the ${role} pods`);
      const svcPort = svcSpec.ports.find((p) => p.name === endpointPort.port);
      assert.ok(svcPort, `Service ${svc.metadata?.name} has no port named ${endpointPort.port}`);
      assert.ok(podPorts.some((p) => p.name === svcPort.targetPort || p.containerPort === svcPort.targetPort), `${role} pods expose no port ${String(svcPort.targetPort)}`);
      // Plain Prometheus (annotation-based pod discovery) scrapes the same port.
      const annotations = (template.metadata as { annotations?: Record<string, string> }).annotations ?? {};
      assert.equal(annotations['prometheus.io/scrape'], 'true', `${role}: prometheus.io/scrape`);
      assert.ok(podPorts.some((p) => String(p.containerPort) === annotations['prometheus.io/port']), `${role}: prometheus.io/port`);
    }
  });

  it('the KEDA token-rate trigger queries ml_tokens_processed_total of this namespace on the Operator\'s Prometheus', () => {
    const scaled = ofKind('ScaledObject').find((s) => s.metadata?.name === 'sluice-worker');
    assert.ok(scaled);
    const triggers = (scaled.spec as { triggers: { type: string; metadata: Record<string, string> }[] }).triggers;
    const prom = triggers.find((t) => t.type === 'prometheus');
    assert.ok(prom);
    assert.equal(prom.metadata.serverAddress, 'http://prometheus-operated.monitoring.svc:9090');
    assert.match(prom.metadata.query!, /^sum\(rate\(ml_tokens_processed_total\{namespace="sluice"\}\[5m\]\)\) \* 60$/);
    // The metric is one a scraped role exports.
    assert.match(readFileSync('src/core/metrics.ts', 'utf8'), /name: 'ml_tokens_processed_total'/);
  });
});

describe('deploy/prometheus config', promtoolSuite(), () => {
  it('promtool check config (scrape jobs for every role and the rule file)', async () => {
    const r = await promtool(['check', 'config', 'deploy/prometheus/prometheus.yml']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const config = load('deploy/prometheus/prometheus.yml')[0] as { scrape_configs: { job_name: string }[] };
    assert.deepEqual(config.scrape_configs.map((s) => s.job_name).sort(), ['sluice-gateway', 'sluice-ledger', 'sluice-worker']);
  });
});

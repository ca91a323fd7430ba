// Writes the Prometheus Operator's PrometheusRule (deploy/k8s/extras/prometheusrule.yaml) from the
// plain rule file (deploy/prometheus/alerts.yaml), so the two never drift apart.
// usage: node scripts/prometheus-rule.mjs [--check]   (--check: exit 1 if the file is out of date)
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const root = new URL('..', import.meta.url);
export const RULES_FILE = fileURLToPath(new URL('deploy/prometheus/alerts.yaml', root));
export const OPERATOR_FILE = fileURLToPath(new URL('deploy/k8s/extras/prometheusrule.yaml', root));

const HEADER = `# Generated from deploy/prometheus/alerts.yaml by \`node scripts/prometheus-rule.mjs\`: edit that
# file, then run the script (test/ops/alert-rules.test.ts fails while this one is out of date).
# For clusters running the Prometheus Operator. Apply separately:
#   kubectl apply -f deploy/k8s/extras/prometheusrule.yaml
# Adjust the \`release\` label to match your Prometheus' ruleSelector.
`;

/** The PrometheusRule manifest (text) holding the groups of the rule file's text. */
export function prometheusRule(rulesText) {
  const { groups } = parse(rulesText);
  const manifest = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'sluice', namespace: 'sluice', labels: { release: 'prometheus', 'app.kubernetes.io/name': 'sluice' } },
    spec: { groups },
  };
  return HEADER + stringify(manifest, { lineWidth: 0 });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const want = prometheusRule(readFileSync(RULES_FILE, 'utf8'));
  if (process.argv.includes('--check')) {
    let have = '';
    try { have = readFileSync(OPERATOR_FILE, 'utf8'); } catch { /* missing: out of date */ }
    if (have !== want) { console.error(`${OPERATOR_FILE} is out of date: run node scripts/prometheus-rule.mjs`); process.exit(1); }
  } else {
    writeFileSync(OPERATOR_FILE, want);
    console.log(`wrote ${OPERATOR_FILE}`);
  }
}

// The alerting rules: valid for Prometheus (promtool check rules), each alert unit-tested
// (promtool test rules, deploy/prometheus/alerts.test.yaml) with a case where it fires, each
// documented in the runbook, and the Operator's PrometheusRule generated from the same file.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { promtool, promtoolSuite } from '../helpers/promtool.ts';

const RULES = 'deploy/prometheus/alerts.yaml';
const RULE_TESTS = 'deploy/prometheus/alerts.test.yaml';

interface RuleFile { groups: { name: string; rules: { alert?: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[] }
interface RuleTests { tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[] }

const alerts = (parse(readFileSync(RULES, 'utf8')) as RuleFile).groups.flatMap((g) => g.rules).filter((r) => r.alert);

describe('alerting rules', () => {
  it('cover what the operator must hear about, each with a severity and a runbook section', () => {
    const names = alerts.map((r) => r.alert!);
    for (const wanted of ['SluiceHighErrorRate', 'SluiceTimeToFirstTokenHigh', 'SluiceQueueAgeHigh', 'SluiceLimiterDegraded', 'SluiceSettlementBacklog', 'SluiceSweeperReclaims', 'SluiceDeadLetters']) {
      assert.ok(names.includes(wanted), `${wanted} is missing`);
    }
    const runbook = readFileSync('docs/operations.md', 'utf8');
    for (const r of alerts) {
      assert.ok(['critical', 'warning', 'info'].includes(r.labels?.severity ?? ''), `${r.alert}: severity`);
      assert.equal(r.annotations?.runbook, `docs/operations.md#${r.alert!.toLowerCase()}`);
      assert.match(runbook, new RegExp(`^#### ${r.alert}$`, 'm'), `${r.alert} has no runbook section in docs/operations.md`);
    }
  });

  it('each have a unit test in which they fire', () => {
    const tests = (parse(readFileSync(RULE_TESTS, 'utf8')) as RuleTests).tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const r of alerts) {
      assert.ok(tests.some((t) => t.alertname === r.alert && (t.exp_alerts?.length ?? 0) > 0), `${r.alert} never fires in ${RULE_TESTS}`);
      assert.ok(tests.some((t) => t.alertname === r.alert && (t.exp_alerts?.length ?? 0) === 0), `${r.alert} has no case where it stays silent`);
    }
  });

  it('are the same in the Operator PrometheusRule (generated, not edited)', async () => {
    const run = promisify(execFile);
    await run(process.execPath, ['scripts/prometheus-rule.mjs', '--check']).catch((err: { stderr?: string }) => {
      assert.fail(`deploy/k8s/extras/prometheusrule.yaml is out of date: ${err.stderr ?? err}`);
    });
    const operator = parse(readFileSync('deploy/k8s/extras/prometheusrule.yaml', 'utf8')) as { kind: string; spec: RuleFile };
    assert.equal(operator.kind, 'PrometheusRule');
    assert.deepEqual(operator.spec.groups, (parse(readFileSync(RULES, 'utf8')) as RuleFile).groups);
  });
});

describe('alerting rules pass promtool', promtoolSuite(), () => {
  it('check rules', async () => {
    const r = await promtool(['check', 'rules', RULES]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`SUCCESS: ${alerts.length} rules found`));
  });

  it('test rules (every unit test in alerts.test.yaml)', async () => {
    const r = await promtool(['test', 'rules', RULE_TESTS]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /SUCCESS/);
  });
});

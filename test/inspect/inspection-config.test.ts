// INSPECTION_* settings: parsed from the environment, validated, and the per-request mode resolved
// key over tier over the global mode.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig, parseConfig } from '../../src/config.ts';
import { inspectionModeFor } from '../../src/core/inspection.ts';
import { isSluiceError } from '../../src/core/errors.ts';

const env = (vars: Record<string, string>) => ({ SLUICE_CONFIG: '', ...vars });

describe('inspection configuration', () => {
  it('defaults: disabled, 150 ms buffer, built-in PII, no endpoint, prompts off', () => {
    const c = parseConfig({}).inspection;
    assert.deepEqual({ ...c }, { mode: 'disabled', bufferMs: 150, builtin: 'pii', timeoutMs: 1000, circuitFailures: 5, circuitCoolDownMs: 10_000, prompts: 'off' });
  });

  it('reads INSPECTION_* from the environment', () => {
    const c = loadConfig(env({ INSPECTION_MODE: 'hybrid', INSPECTION_BUFFER_MS: '200', INSPECTION_ENDPOINT: 'http://inspector:8080/inspect', INSPECTION_TIMEOUT_MS: '250', INSPECTION_PROMPTS: 'block', INSPECTION_BUILTIN: 'none' })).inspection;
    assert.equal(c.mode, 'hybrid');
    assert.equal(c.bufferMs, 200);
    assert.equal(c.endpoint, 'http://inspector:8080/inspect');
    assert.equal(c.timeoutMs, 250);
    assert.equal(c.prompts, 'block');
    assert.equal(c.builtin, 'none');
  });

  it('refuses an unknown mode, a bad endpoint, and inspection with no inspector', () => {
    for (const vars of [{ INSPECTION_MODE: 'sometimes' }, { INSPECTION_ENDPOINT: 'not a url' }, { INSPECTION_MODE: 'inline', INSPECTION_BUILTIN: 'none' }] as Record<string, string>[]) {
      assert.throws(() => loadConfig(env(vars)), (e: unknown) => isSluiceError(e, 'SLUICE_ERR_CONFIG'), JSON.stringify(vars));
    }
  });

  it('a key\'s mode wins over its tier\'s, a tier\'s over the global one', () => {
    const TIER = { requestsPerDay: 1, tokensPerDay: 1, requestsPerMonth: 1, tokensPerMonth: 1, maxTokens: 1, concurrentStreams: 1, priority: 1 };
    const config = parseConfig({ defaultTier: 'a', inspection: { mode: 'async' }, tiers: { a: TIER, b: { ...TIER, inspection: 'inline' } } });
    assert.equal(inspectionModeFor(config, { tier: 'a' }), 'async');
    assert.equal(inspectionModeFor(config, { tier: 'b' }), 'inline');
    assert.equal(inspectionModeFor(config, { tier: 'b', inspection: 'disabled' }), 'disabled');
    assert.equal(inspectionModeFor(config, { tier: 'a', inspection: null }), 'async');
    assert.equal(inspectionModeFor(config, { tier: 'master' }), 'async');
  });
});

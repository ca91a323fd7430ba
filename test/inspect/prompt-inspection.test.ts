// The request-side check (INSPECTION_PROMPTS): off passes prompts untouched, redact replaces
// findings in string and text-part content, block refuses with SLUICE_ERR_PROMPT_BLOCKED naming the
// kinds (never the text), and an inspector without a verdict refuses with SLUICE_ERR_INSPECTION_FAILED.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { inspectPrompt } from '../../src/core/inspection.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { createLogger } from '../../src/core/logger.ts';
import { PiiInspector } from '../../src/adapters/inspector/pii.ts';
import { isSluiceError } from '../../src/core/errors.ts';
import { InspectorError, type Inspection, type Inspector } from '../../src/ports/inspector.ts';
import type { ChatMessage } from '../../src/ports/model.ts';

const messages: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: [{ type: 'text', text: 'My card: 4111 1111 1111 1111' }, { type: 'image_url', image_url: { url: 'https://x/y.png' } }] as ChatMessage['content'] },
  { role: 'assistant', content: null },
  { role: 'user', content: 'mail me at a.b@example.com' },
];
const deps = (prompts: 'off' | 'block' | 'redact', inspector: Inspector = new PiiInspector()) =>
  ({ config: { inspection: { prompts } } as never, inspector, metrics: createMetrics(), logger: createLogger('silent', 'test') });

describe('prompt inspection', () => {
  it('off: untouched', async () => {
    assert.equal(await inspectPrompt(deps('off'), messages, 'r'), messages);
  });

  it('redact: findings replaced in string content and text parts; other parts and null content kept', async () => {
    const out = await inspectPrompt(deps('redact'), messages, 'r');
    assert.equal(out[0]!.content, 'Be brief.');
    assert.deepEqual(out[1]!.content, [{ type: 'text', text: 'My card: [REDACTED:CARD]' }, { type: 'image_url', image_url: { url: 'https://x/y.png' } }]);
    assert.equal(out[2]!.content, null);
    assert.equal(out[3]!.content, 'mail me at [REDACTED:EMAIL]');
  });

  it('block: refused with the kinds found, not the text', async () => {
    await assert.rejects(inspectPrompt(deps('block'), messages, 'r'), (e: unknown) => {
      assert.ok(isSluiceError(e, 'SLUICE_ERR_PROMPT_BLOCKED'));
      assert.equal(e.status, 422);
      assert.match(e.message, /card, email/);
      assert.equal(e.message.includes('4111'), false);
      return true;
    });
    assert.deepEqual(await inspectPrompt(deps('block'), [{ role: 'user', content: 'hello' }], 'r'), [{ role: 'user', content: 'hello' }]);
  });

  it('an inspector without a verdict refuses the prompt (503 SLUICE_ERR_INSPECTION_FAILED)', async () => {
    const failing: Inspector = { name: 'x', inspect: async (): Promise<Inspection> => { throw new InspectorError('unavailable', 'down'); }, close: async () => {} };
    await assert.rejects(inspectPrompt(deps('redact', failing), messages, 'r'), (e: unknown) => isSluiceError(e, 'SLUICE_ERR_INSPECTION_FAILED') && e.status === 503);
  });
});

// Token counts of repeated texts: remembered counts are the counts, within a bound of characters.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { countTokens } from 'gpt-tokenizer/encoding/o200k_base';
import { countPromptTokens, countTextTokens, TokenCountCache } from '../../src/core/tokens.ts';

const words = (seed: number, n: number): string => Array.from({ length: n }, (_, i) => `word${(seed * 31 + i * 7) % 97}`).join(' ');

describe('token count cache', () => {
  it('answers a repeated text from memory with the count it computed', () => {
    const calls: string[] = [];
    const cache = new TokenCountCache((t) => { calls.push(t); return t.length; }, 1000, 10);
    const text = 'x'.repeat(50);
    assert.equal(cache.get(text), 50);
    assert.equal(cache.get(`${'x'.repeat(49)}x`), 50); // an equal string built another way
    assert.equal(calls.length, 1);
  });

  it('counts short texts and texts over an eighth of the bound every time, holding none of them', () => {
    let calls = 0;
    const cache = new TokenCountCache((t) => { calls++; return t.length; }, 800, 10);
    for (let i = 0; i < 3; i++) { cache.get('short'); cache.get('y'.repeat(101)); }
    assert.equal(calls, 6);
    assert.equal(cache.size, 0);
  });

  it('stays within its bound, dropping the least recently used text first', () => {
    const calls: string[] = [];
    const cache = new TokenCountCache((t) => { calls.push(t); return t.length; }, 800, 10);
    const texts = [...'abcdefgh'].map((ch) => ch.repeat(100)); // 800 characters: the bound
    for (const t of texts) cache.get(t);
    assert.equal(cache.size, 800);
    cache.get(texts[0]!); // a is now the most recently used
    cache.get('i'.repeat(100)); // over the bound: b, the least recently used, goes
    assert.equal(cache.size, 800);
    calls.length = 0;
    for (const t of [texts[0]!, ...texts.slice(2), 'i'.repeat(100)]) cache.get(t);
    assert.deepEqual(calls, []);
    cache.get(texts[1]!);
    assert.deepEqual(calls, [texts[1]]);
    assert.ok(cache.size <= 800);
  });

  it('gives the tokenizer\'s counts, the first time and from memory', () => {
    // Under 1,024 characters countTextTokens is one call of the tokenizer (longer texts are cut in segments).
    const texts = [words(1, 100), words(2, 5), 'a', '', `${words(4, 40)} <|endoftext|>`, words(7, 100)];
    const expected = texts.map((t) => countTokens(t, { disallowedSpecial: new Set() }));
    assert.deepEqual(texts.map(countTextTokens), expected);
    assert.deepEqual(texts.map(countTextTokens), expected);
    const long = words(3, 1500);
    assert.equal(countTextTokens(long), countTextTokens(long.slice(0)));
    const messages = [{ role: 'system' as const, content: words(5, 120) }, { role: 'user' as const, content: words(6, 30) }];
    const tools = [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { q: { type: 'string' } } } } }];
    assert.equal(countPromptTokens(messages, tools), countPromptTokens(structuredClone(messages), structuredClone(tools)));
  });
});

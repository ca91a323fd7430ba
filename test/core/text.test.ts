// The storable-text walker: finds NULs and unpaired surrogates in values and keys at any depth.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assertStorableText, findInvalidText, isStorableText } from '../../src/core/text.ts';
import { isSluiceError } from '../../src/core/errors.ts';

describe('storable text', () => {
  it('tells NULs and unpaired surrogates from well-formed text', () => {
    for (const ok of ['', 'plain', '\uD83D\uDE00', 'é ü 中文', '\uFFFD']) assert.equal(isStorableText(ok), true, JSON.stringify(ok));
    for (const bad of ['\0', 'a\0', '\uD800', 'x\uDBFF', '\uDC00', '\uDE00\uD83D', '\uD83D\uD83D\uDE00\uDE00']) assert.equal(isStorableText(bad), false, JSON.stringify(bad));
  });

  it('names the first bad string by its dotted path, keys included', () => {
    assert.equal(findInvalidText({ a: [1, 'ok', { b: 'x\0' }] }), 'a.2.b');
    assert.equal(findInvalidText({ a: 'ok', b: { c: 'ok' } }), null);
    assert.equal(findInvalidText({ a: { 'k\uD800': 1 } }), 'a.k\uFFFD');
    assert.equal(findInvalidText('\0'), '');
    assert.equal(findInvalidText([null, true, 3, '\uDC00']), '3');
    assert.equal(findInvalidText({ first: '\0', second: '\0' }), 'first');
  });

  it('walks a body nested deeper than the call stack without overflowing', () => {
    const deep = JSON.parse(`${'['.repeat(200_000)}"\\u0000"${']'.repeat(200_000)}`) as unknown;
    assert.equal(findInvalidText(deep)?.split('.').length, 200_000);
  });

  it('throws SLUICE_ERR_INVALID_TEXT (400) with the param', () => {
    assert.throws(() => assertStorableText({ messages: [{ content: '\0' }] }), (e) => isSluiceError(e, 'SLUICE_ERR_INVALID_TEXT') && e.status === 400 && e.details?.param === 'messages.0.content');
    assert.doesNotThrow(() => assertStorableText({ messages: [{ content: '\uD83D\uDE00' }] }));
  });
});

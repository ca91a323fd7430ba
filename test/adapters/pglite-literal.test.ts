// The PGlite driver sends prepared statements' arguments as literals: quoting must be exact.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { literal } from '../../src/adapters/store/pglite.ts';

describe('PGlite literals', () => {
  it('quotes text by doubling quotes only (standard_conforming_strings)', () => {
    assert.equal(literal(`it's`), `'it''s'`);
    assert.equal(literal('a\\b'), `'a\\b'`);
    assert.equal(literal(`'); DROP TABLE x; --`), `'''); DROP TABLE x; --'`);
  });
  it('passes numbers, booleans and null as SQL, dates as ISO text, objects as JSON', () => {
    assert.equal(literal(null), 'NULL');
    assert.equal(literal(undefined), 'NULL');
    assert.equal(literal(-5), '-5');
    assert.equal(literal(1.5), '1.5');
    assert.equal(literal(10n), '10');
    assert.equal(literal(true), 'true');
    assert.equal(literal(new Date('2026-11-21T00:00:00Z')), `'2026-11-21T00:00:00.000Z'`);
    assert.equal(literal({ a: "b'c" }), `'{"a":"b''c"}'`);
  });
  it('refuses what cannot be sent safely', () => {
    assert.throws(() => literal(Number.NaN), TypeError);
    assert.throws(() => literal(Infinity), TypeError);
    assert.throws(() => literal('a\0b'), TypeError);
  });
});

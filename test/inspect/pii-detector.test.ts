// The built-in PII detector: each kind found and checked (Luhn, IBAN mod-97, IP ranges), look-alikes
// left alone, and the holdback streaming redactor giving the same output whatever the token splits.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { detectPii, ibanValid, luhnValid, piiHold, PiiInspector } from '../../src/adapters/inspector/pii.ts';
import { StreamRedactor } from '../../src/core/stream-redactor.ts';
import { mulberry32 } from '../../src/adapters/model/sim-answer.ts';

const types = (text: string) => detectPii(text).map((f) => `${f.type}:${text.slice(f.start, f.end)}`);

async function redactWhole(text: string): Promise<string> {
  const r = new StreamRedactor(new PiiInspector(), 'r');
  r.add(text);
  return (await r.finish()).text;
}

async function redactPieces(pieces: string[]): Promise<{ text: string; maxHeld: number }> {
  const r = new StreamRedactor(new PiiInspector(), 'r');
  let text = '';
  let maxHeld = 0;
  for (const p of pieces) { text += (await r.push(p)).text; maxHeld = Math.max(maxHeld, r.held); }
  return { text: text + (await r.finish()).text, maxHeld };
}

/** Splits text at random points into pieces of 1..maxLen characters. */
function randomSplit(text: string, random: () => number, maxLen = 6): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length;) { const n = 1 + Math.floor(random() * maxLen); out.push(text.slice(i, i + n)); i += n; }
  return out;
}

describe('PII checksums', () => {
  it('Luhn accepts valid card numbers and refuses one changed digit', () => {
    for (const ok of ['4111111111111111', '5500005555555559', '378282246310005', '6011111111111117']) assert.equal(luhnValid(ok), true, ok);
    for (const bad of ['4111111111111112', '5500005555555558', '378282246310006', '']) assert.equal(luhnValid(bad), false, bad);
  });

  it('IBAN mod-97 accepts real examples and refuses a changed digit or a bad shape', () => {
    for (const ok of ['DE89370400440532013000', 'GB82 WEST 1234 5698 7654 32', 'FR1420041010050500013M02606', 'NL91ABNA0417164300']) assert.equal(ibanValid(ok), true, ok);
    for (const bad of ['DE89370400440532013001', 'GB82WEST12345698765433', 'XX00', 'de89370400440532013000']) assert.equal(ibanValid(bad), false, bad);
  });
});

describe('PII detector', () => {
  it('finds each kind', () => {
    assert.deepEqual(types('mail jane.doe+x@example.co.uk now'), ['email:jane.doe+x@example.co.uk']);
    assert.deepEqual(types('card 4111 1111 1111 1111 ok'), ['card:4111 1111 1111 1111']);
    assert.deepEqual(types('card 4111-1111-1111-1111.'), ['card:4111-1111-1111-1111']);
    assert.deepEqual(types('iban DE89 3704 0044 0532 0130 00 thanks'), ['iban:DE89 3704 0044 0532 0130 00']);
    assert.deepEqual(types('call +1 (415) 555-2671 today'), ['phone:+1 (415) 555-2671']);
    assert.deepEqual(types('call 020 7946 0958 today'), ['phone:020 7946 0958']);
    assert.deepEqual(types('host 192.168.10.254 up'), ['ip:192.168.10.254']);
    assert.deepEqual(types('v6 2001:db8:85a3::8a2e:370:7334 up'), ['ip:2001:db8:85a3::8a2e:370:7334']);
    assert.deepEqual(types('key sk-abcdefghijklmnop1234 here'), ['secret:sk-abcdefghijklmnop1234']);
    assert.deepEqual(types('aws AKIAIOSFODNN7EXAMPLE here'), ['secret:AKIAIOSFODNN7EXAMPLE']);
    assert.deepEqual(types(`gh ghp_${'a1B2'.repeat(9)} x`), [`secret:ghp_${'a1B2'.repeat(9)}`]);
  });

  it('leaves look-alikes alone', () => {
    assert.deepEqual(types('card 4111 1111 1111 1112 fails Luhn'), []);
    assert.deepEqual(types('iban DE89 3704 0044 0532 0130 02 fails mod 97'), []);
    assert.deepEqual(types('version 1.2.3.999 and 300.1.1.1'), []);
    assert.deepEqual(types('the year 2024, page 12, order 1234567'), []);
    assert.deepEqual(types('at 12:30 the ratio was 3:1'), []);
    assert.deepEqual(types('task-runner sk-short and AKIA123'), []);
    assert.deepEqual(types('see example@localhost'), []);
  });

  it('hostile input does not backtrack catastrophically (100 KB each; 22 s for the colons before the IPv6 bound)', () => {
    for (const s of ['a:'.repeat(50_000), '1:'.repeat(50_000), 'a@' + 'b1.'.repeat(33_000) + '!', 'DE89 '.repeat(20_000), '1 '.repeat(50_000), '+1 (2'.repeat(20_000)]) {
      const started = performance.now();
      detectPii(s);
      piiHold(s);
      assert.ok(performance.now() - started < 5_000, `${s.slice(0, 8)}…: ${Math.round(performance.now() - started)} ms`);
    }
  });

  it('holds back what could still become a finding, and only that', () => {
    const hold = (t: string) => t.slice(piiHold(t));
    assert.equal(hold('The river was quiet. '), '');
    assert.equal(hold('was quiet.'), 'quiet.', 'a dot may continue an e-mail local part');
    assert.equal(hold('The river'), 'river');
    assert.equal(hold('pay with 4111 1111 '), '4111 1111 ');
    assert.equal(hold('mail me at jane@exa'), 'jane@exa');
    assert.equal(hold('host 10.0.'), '10.0.');
    assert.equal(hold('addr 2001:db8:'), '2001:db8:');
    assert.equal(hold('call +44 '), '+44 ');
    assert.equal(hold('done. '), '');
  });
});

describe('streaming redactor', () => {
  it('redacts a card number split over five tokens', async () => {
    const out = await redactPieces(['My card is 41', '11 111', '1 1111 ', '111', '1 and more.']);
    assert.equal(out.text, 'My card is [REDACTED:CARD] and more.');
  });

  it('releases ordinary words at once, holding only the last word', async () => {
    const r = new StreamRedactor(new PiiInspector(), 'r');
    assert.equal((await r.push('The')).text, '');
    assert.equal((await r.push(' river')).text, 'The ');
    assert.equal((await r.push(' was, ')).text, 'river was, ');
    assert.equal(r.held, 0);
  });

  it('gives the same output for any token split (property, 200 random splits)', async () => {
    const text = 'Dear jane.doe@example.com, your card 4111 1111 1111 1111 and IBAN GB82 WEST 1234 5698 7654 32 ' +
      'were seen from 192.168.1.20 and 2001:db8::ff00:42:8329; call +1 (415) 555-2671 or use key sk-proj-abcdefghij0123456789XYZ. ' +
      'Not a card: 4111 1111 1111 1112. Version 1.2.3 at 12:30, ghp_' + 'Zz09'.repeat(9) + ' AKIAIOSFODNN7EXAMPLE end';
    const whole = await redactWhole(text);
    for (const secret of ['jane.doe', '4111 1111 1111 1111', 'GB82', '192.168', '2001:db8', '555-2671', 'sk-proj', 'ghp_', 'AKIA']) {
      assert.equal(whole.includes(secret), false, `${secret} leaked: ${whole}`);
    }
    assert.ok(whole.includes('4111 1111 1111 1112'), 'a non-Luhn number stays');
    const random = mulberry32(20261203);
    for (let run = 0; run < 200; run++) {
      const out = await redactPieces(randomSplit(text, random, 1 + (run % 9)));
      assert.equal(out.text, whole, `run ${run}`);
    }
  });

  it('bounds the held tail: a huge word is released, not buffered forever', async () => {
    const r = new StreamRedactor(new PiiInspector(), 'r', 64);
    let out = '';
    for (let i = 0; i < 100; i++) { out += (await r.push('abcdefghij')).text; assert.ok(r.held <= 64 + 10); }
    out += (await r.finish()).text;
    assert.equal(out, 'abcdefghij'.repeat(100));
  });
});

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { periodsAt, windowLimits, windowStart } from '../../src/core/quota-windows.ts';

const at = (iso: string) => Date.parse(iso);

describe('quota windows', () => {
  it('UTC: the day rolls over exactly at midnight', () => {
    const before = periodsAt(at('2026-11-21T23:59:59.999Z'), 'UTC');
    const after = periodsAt(at('2026-11-22T00:00:00.000Z'), 'UTC');
    assert.equal(before.daily.period, '2026-11-21');
    assert.equal(before.daily.resetAt, at('2026-11-22T00:00:00Z'));
    assert.equal(after.daily.period, '2026-11-22');
    assert.equal(after.daily.resetAt, at('2026-11-23T00:00:00Z'));
    assert.equal(before.monthly.period, '2026-11');
    assert.equal(before.monthly.resetAt, at('2026-12-01T00:00:00Z'));
  });

  it("a day's answer is reused only inside that local day, whichever way the clock moves", () => {
    const zone = 'America/New_York';
    const day = periodsAt(at('2026-11-21T12:00:00Z'), zone);
    assert.equal(periodsAt(at('2026-11-22T04:59:59.999Z'), zone), day);
    assert.equal(periodsAt(at('2026-11-21T05:00:00Z'), zone), periodsAt(at('2026-11-21T12:00:00Z'), zone));
    // Just before the day began (an injected clock may go back): the previous day.
    assert.equal(periodsAt(at('2026-11-21T04:59:59.999Z'), zone).daily.period, '2026-11-20');
    assert.equal(periodsAt(at('2026-11-21T12:00:00Z'), zone).daily.period, '2026-11-21');
    assert.equal(periodsAt(at('2026-11-22T05:00:00Z'), zone).daily.period, '2026-11-22');
    assert.throws(() => { (day.daily as { period: string }).period = 'x'; }, TypeError);
  });

  it('America/New_York: the day rolls over at local midnight, not UTC midnight', () => {
    assert.equal(periodsAt(at('2026-11-22T00:30:00Z'), 'America/New_York').daily.period, '2026-11-21');
    const last = periodsAt(at('2026-11-22T04:59:59.999Z'), 'America/New_York');
    assert.equal(last.daily.period, '2026-11-21');
    assert.equal(last.daily.resetAt, at('2026-11-22T05:00:00Z'));
    assert.equal(periodsAt(at('2026-11-22T05:00:00Z'), 'America/New_York').daily.period, '2026-11-22');
  });

  it('Asia/Tokyo: the day and the month roll over at local midnight (UTC+9)', () => {
    const p = periodsAt(at('2026-11-30T14:59:59.999Z'), 'Asia/Tokyo');
    assert.deepEqual(p, {
      daily: { period: '2026-11-30', resetAt: at('2026-11-30T15:00:00Z') },
      monthly: { period: '2026-11', resetAt: at('2026-11-30T15:00:00Z') },
    });
    const q = periodsAt(at('2026-11-30T15:00:00Z'), 'Asia/Tokyo');
    assert.equal(q.daily.period, '2026-12-01');
    assert.equal(q.monthly.period, '2026-12');
    assert.equal(q.monthly.resetAt, at('2026-12-31T15:00:00Z'));
  });

  it('month and year rollover', () => {
    const p = periodsAt(at('2026-12-31T12:00:00Z'), 'UTC');
    assert.equal(p.monthly.period, '2026-12');
    assert.equal(p.monthly.resetAt, at('2027-01-01T00:00:00Z'));
    assert.equal(p.daily.resetAt, at('2027-01-01T00:00:00Z'));
    assert.equal(periodsAt(at('2027-01-01T00:00:00Z'), 'UTC').monthly.period, '2027-01');
  });

  it('DST: the fall-back day lasts 25 hours and the spring-forward day 23 (New York)', () => {
    // 2026-11-01: clocks go back at 02:00 EDT; the day starts at 04:00Z and ends at 05:00Z next day.
    const fall = periodsAt(at('2026-11-01T12:00:00Z'), 'America/New_York');
    assert.equal(fall.daily.period, '2026-11-01');
    assert.equal(fall.daily.resetAt, at('2026-11-02T05:00:00Z'));
    assert.equal(fall.daily.resetAt - windowStart('2026-11-01', 'daily', 'America/New_York'), 25 * 3_600_000);
    // The day before still ends at the EDT midnight.
    assert.equal(periodsAt(at('2026-10-31T12:00:00Z'), 'America/New_York').daily.resetAt, at('2026-11-01T04:00:00Z'));
    // 2026-03-08: clocks jump forward at 02:00 EST.
    const spring = periodsAt(at('2026-03-08T12:00:00Z'), 'America/New_York');
    assert.equal(spring.daily.resetAt, at('2026-03-09T04:00:00Z'));
    assert.equal(spring.daily.resetAt - windowStart('2026-03-08', 'daily', 'America/New_York'), 23 * 3_600_000);
  });

  it('DST at midnight: a day whose midnight does not exist starts after the gap (Santiago)', () => {
    // 2026-09-06 00:00 -04 jumps to 01:00 -03, which is 04:00Z.
    assert.equal(periodsAt(at('2026-09-05T12:00:00Z'), 'America/Santiago').daily.resetAt, at('2026-09-06T04:00:00Z'));
    assert.equal(windowStart('2026-09-06', 'daily', 'America/Santiago'), at('2026-09-06T04:00:00Z'));
    assert.equal(periodsAt(at('2026-09-06T04:00:00Z'), 'America/Santiago').daily.period, '2026-09-06');
    assert.equal(periodsAt(at('2026-09-06T03:59:59.999Z'), 'America/Santiago').daily.period, '2026-09-05');
  });

  it('windowStart is the first instant of the period and precedes every instant in it', () => {
    for (const tz of ['UTC', 'America/New_York', 'Asia/Tokyo', 'Europe/Berlin']) {
      for (const iso of ['2026-11-21T10:00:00Z', '2026-03-29T01:30:00Z', '2026-11-01T06:00:00Z']) {
        const now = at(iso);
        const p = periodsAt(now, tz);
        const dayStart = windowStart(p.daily.period, 'daily', tz);
        assert.ok(dayStart <= now && now < p.daily.resetAt, `${tz} ${iso}`);
        assert.equal(periodsAt(dayStart, tz).daily.period, p.daily.period);
        assert.notEqual(periodsAt(dayStart - 1, tz).daily.period, p.daily.period);
        const monthStart = windowStart(p.monthly.period, 'monthly', tz);
        assert.equal(periodsAt(monthStart, tz).monthly.period, p.monthly.period);
        assert.notEqual(periodsAt(monthStart - 1, tz).monthly.period, p.monthly.period);
      }
    }
    assert.equal(windowStart('2026-11', 'monthly', 'Asia/Tokyo'), at('2026-10-31T15:00:00Z'));
    assert.throws(() => windowStart('2026-11', 'daily', 'UTC'), RangeError);
  });

  it('windowLimits gives the four windows with their limits and periods', () => {
    const w = windowLimits({ requestsPerDay: 1, tokensPerDay: 2, requestsPerMonth: 3, tokensPerMonth: 4 }, at('2026-11-21T10:00:00Z'), 'UTC');
    assert.deepEqual(w.map((x) => [x.window, x.metric, x.limit, x.period]), [
      ['daily', 'requests', 1, '2026-11-21'], ['daily', 'tokens', 2, '2026-11-21'],
      ['monthly', 'requests', 3, '2026-11'], ['monthly', 'tokens', 4, '2026-11'],
    ]);
    assert.equal(w[0]?.resetAt, at('2026-11-22T00:00:00Z'));
    assert.equal(w[3]?.resetAt, at('2026-12-01T00:00:00Z'));
  });
});

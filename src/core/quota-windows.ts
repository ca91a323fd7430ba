// Quota windows: which daily and monthly period an instant falls in, in the deployment's time
// zone, and when each period ends. Pure functions of (instant, zone); no clock is read here.
import type { Metric, WindowKind, WindowLimit } from '../ports/limiter.ts';

export interface Period { period: string; resetAt: number }
export interface Periods { daily: Period; monthly: Period }
export interface QuotaLimits { requestsPerDay: number; tokensPerDay: number; requestsPerMonth: number; tokensPerMonth: number }

interface LocalTime { year: number; month: number; day: number; hour: number; minute: number; second: number }

const HOUR = 3_600_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

// Building a DateTimeFormat costs far more than using one, and this runs on every admission.
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23',
      year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

function localTime(t: number, timeZone: string): LocalTime {
  const out: LocalTime = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };
  for (const p of formatter(timeZone).formatToParts(t)) {
    if (p.type in out) out[p.type as keyof LocalTime] = Number(p.value);
  }
  return out;
}

/** Local wall time minus UTC at instant t, in ms (whole seconds; zones never use finer offsets). */
function offsetAt(t: number, timeZone: string): number {
  const l = localTime(t, timeZone);
  const asUtc = Date.UTC(l.year, l.month - 1, l.day, l.hour, l.minute, l.second);
  return asUtc - (t - (((t % 1000) + 1000) % 1000));
}

/** Days since epoch of a local calendar date; comparable across months and years. */
function dayNumber(year: number, month: number, day: number): number {
  return Math.floor(Date.UTC(year, month - 1, day) / 86_400_000);
}

/**
 * First instant whose local date is on or after the given calendar date (month/day may overflow;
 * Date.UTC normalises them). Usually local midnight; where a DST jump skips midnight it is the
 * first instant after the gap.
 */
function startOfLocalDay(year: number, month: number, day: number, timeZone: string): number {
  const wall = Date.UTC(year, month - 1, day);
  const target = Math.floor(wall / 86_400_000);
  let t = wall - offsetAt(wall, timeZone);
  t = wall - offsetAt(t, timeZone);
  const dayOf = (x: number) => { const l = localTime(x, timeZone); return dayNumber(l.year, l.month, l.day); };
  if (dayOf(t) >= target && dayOf(t - 1) < target) return t;
  // Midnight fell into a DST gap or overlap: search for the boundary around the estimate.
  let lo = t - 4 * HOUR; let hi = t + 4 * HOUR;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (dayOf(mid) >= target) hi = mid; else lo = mid;
  }
  return hi;
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** The periods of the local day last asked for, per zone, valid for instants in [from, until). */
const lastDay = new Map<string, { from: number; until: number; periods: Periods }>();

/** The daily and monthly periods containing `now` in `timeZone`, and when each ends. */
export function periodsAt(now: number, timeZone: string): Periods {
  // Every admission and settle asks, and computing costs about ten time-zone conversions: the
  // answer only changes at local midnight, so it is reused until then.
  const last = lastDay.get(timeZone);
  if (last && now >= last.from && now < last.until) return last.periods;
  const computed = computePeriods(now, timeZone);
  const periods = Object.freeze({ daily: Object.freeze(computed.daily), monthly: Object.freeze(computed.monthly) });
  const l = localTime(now, timeZone);
  lastDay.set(timeZone, { from: startOfLocalDay(l.year, l.month, l.day, timeZone), until: periods.daily.resetAt, periods });
  return periods;
}

function computePeriods(now: number, timeZone: string): Periods {
  const l = localTime(now, timeZone);
  return {
    daily: {
      period: `${pad(l.year, 4)}-${pad(l.month)}-${pad(l.day)}`,
      resetAt: startOfLocalDay(l.year, l.month, l.day + 1, timeZone),
    },
    monthly: {
      period: `${pad(l.year, 4)}-${pad(l.month)}`,
      resetAt: startOfLocalDay(l.year, l.month + 1, 1, timeZone),
    },
  };
}

/** The four windows (requests and tokens, per day and per month) an admission at `now` checks. */
export function windowLimits(limits: QuotaLimits, now: number, timeZone: string): WindowLimit[] {
  const { daily, monthly } = periodsAt(now, timeZone);
  const w = (window: WindowKind, metric: Metric, limit: number, p: Period): WindowLimit =>
    ({ window, metric, limit, period: p.period, resetAt: p.resetAt });
  return [
    w('daily', 'requests', limits.requestsPerDay, daily),
    w('daily', 'tokens', limits.tokensPerDay, daily),
    w('monthly', 'requests', limits.requestsPerMonth, monthly),
    w('monthly', 'tokens', limits.tokensPerMonth, monthly),
  ];
}

const DAILY = /^(\d{4})-(\d{2})-(\d{2})$/;
const MONTHLY = /^(\d{4})-(\d{2})$/;

/** First instant of a period ('YYYY-MM-DD' daily, 'YYYY-MM' monthly) in `timeZone`. */
export function windowStart(period: string, kind: WindowKind, timeZone: string): number {
  const m = (kind === 'daily' ? DAILY : MONTHLY).exec(period);
  if (!m) throw new RangeError(`"${period}" is not a ${kind} period`);
  const [year, month, day] = [Number(m[1]), Number(m[2]), kind === 'daily' ? Number(m[3]) : 1];
  return startOfLocalDay(year, month, day, timeZone);
}

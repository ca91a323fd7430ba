// Text that can be stored: PostgreSQL `text` and `jsonb` cannot hold a NUL character, and a lone
// UTF-16 surrogate has no UTF-8 form (jsonb refuses its escape; a text parameter would be changed
// to U+FFFD). Sluice refuses such input at the edge with SLUICE_ERR_INVALID_TEXT rather than
// storing it lossily or failing in the database with a 500. Every string of a body is checked,
// object keys and unknown (passthrough) fields included, since any of them may reach the store
// or a log line.
import { SluiceError } from './errors.ts';

/** String.prototype.isWellFormed (Node 20, ES2024), which the ES2022 lib does not declare. */
type WellFormedCheck = { isWellFormed(): boolean };

/** Whether PostgreSQL can store `s` as it is: no NUL, no unpaired surrogate. */
export function isStorableText(s: string): boolean {
  return !s.includes('\0') && (s as string & WellFormedCheck).isWellFormed();
}

/**
 * `s` as PostgreSQL can store it: NUL and unpaired surrogates become U+FFFD. For what a model
 * produced (the input was refused instead): the answer is kept, not lost to a failed write.
 */
export function toStorableText(s: string): string {
  return isStorableText(s) ? s : (s as string & { toWellFormed(): string }).toWellFormed().replaceAll('\0', '\uFFFD');
}

/**
 * `value` with every string and object key made storable (toStorableText), for model output of
 * any JSON shape (logprobs entries). The same object when all of it is storable already, else a copy.
 */
export function toStorableJson<T>(value: T): T {
  return (allStorable(value) ? value : storableCopy(value)) as T;
}

function storableCopy(value: unknown): unknown {
  if (typeof value === 'string') return toStorableText(value);
  if (Array.isArray(value)) return value.map(storableCopy);
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) out[toStorableText(key)] = storableCopy(v);
  return out;
}

/** A key as it can be shown in `param`: the offending characters replaced by U+FFFD. */
function printable(key: string): string {
  return key.replace(/\0|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

/**
 * The dotted path (`messages.0.content`) of the first string value or object key in `value`
 * that is not storable text, or null if there is none. Walks with its own stack: a parsed body
 * may nest deeper than the call stack allows.
 */
export function findInvalidText(value: unknown, root = ''): string | null {
  // Every chat request passes here: the common case (all text storable) builds no path strings.
  if (allStorable(value)) return null;
  const stack: { value: unknown; path: string }[] = [{ value, path: root }];
  const join = (path: string, key: string | number) => (path === '' ? String(key) : `${path}.${key}`);
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const v = item.value;
    if (typeof v === 'string') {
      if (!isStorableText(v)) return item.path;
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ value: v[i], path: join(item.path, i) });
    } else if (typeof v === 'object' && v !== null) {
      const entries = Object.entries(v);
      for (const [key] of entries) if (!isStorableText(key)) return join(item.path, printable(key));
      for (let i = entries.length - 1; i >= 0; i--) stack.push({ value: entries[i]![1], path: join(item.path, entries[i]![0]) });
    }
  }
  return null;
}

/** Whether every string value and key in `value` is storable; a walk with its own stack, no paths. */
function allStorable(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      if (!isStorableText(v)) return false;
    } else if (Array.isArray(v)) {
      for (const x of v) stack.push(x);
    } else if (typeof v === 'object' && v !== null) {
      for (const key in v) {
        if (!Object.hasOwn(v, key)) continue;
        if (!isStorableText(key)) return false;
        stack.push((v as Record<string, unknown>)[key]);
      }
    }
  }
  return true;
}

/** Throws SLUICE_ERR_INVALID_TEXT naming the first unstorable string of `value` (see findInvalidText). */
export function assertStorableText(value: unknown, root = ''): void {
  const param = findInvalidText(value, root);
  if (param === null) return;
  throw new SluiceError('SLUICE_ERR_INVALID_TEXT', `${param || 'body'}: text contains a NUL character or an unpaired UTF-16 surrogate`, { param: param || undefined });
}

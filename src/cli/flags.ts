// Flag parsing shared by every command (node:util parseArgs: strict, so an unknown flag is an error).
import { parseArgs } from 'node:util';

/** Parses `args` against `options`; unknown flags throw (the command prints its usage). */
export function flags<T extends Record<string, { type: 'string' | 'boolean'; short?: string }>>(args: string[], options: T) {
  return parseArgs({ args, options, allowPositionals: true, strict: true });
}

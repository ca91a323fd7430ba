#!/usr/bin/env node
// Entry point. Runs the compiled CLI in dist/ (`npm run build`; `npm install` builds it through the
// `prepare` script). Runs the TypeScript sources through tsx instead when SLUICE_DEV=1 (`npm run
// dev`, and the tests) or when there is no dist/ (a checkout whose build was skipped).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const built = new URL('../dist/cli/main.js', import.meta.url);
if (process.env.SLUICE_DEV !== '1' && existsSync(built)) {
  warnIfStale(fileURLToPath(built), fileURLToPath(new URL('../src', import.meta.url)));
  await import(built.href);
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    const why = process.env.SLUICE_DEV === '1' ? 'SLUICE_DEV=1 asks for the sources' : 'dist/ is not built';
    process.stderr.write(`sluice: ${why}, and tsx (a development dependency) is not installed to run them.\n`
      + 'Run `npm install` with dev dependencies (it also builds dist/), or unset SLUICE_DEV to run a built dist/.\n');
    process.exit(1);
  }
  // The sources run; a child process this one starts (`sluice up`) must run them too.
  process.env.SLUICE_DEV = '1';
  register();
  await import('../src/cli/main.ts');
}

/** In a checkout (an image has no src/), a source edited after the last build would not run: say so. */
function warnIfStale(main, src) {
  if (!existsSync(src)) return;
  const builtAt = statSync(main).mtimeMs;
  const newer = (dir) => readdirSync(dir, { withFileTypes: true }).some((e) =>
    e.isDirectory() ? newer(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs > builtAt);
  if (newer(src)) process.stderr.write('sluice: src/ changed since dist/ was built; running the old build (`npm run build`, or `npm run dev` to run the sources)\n');
}

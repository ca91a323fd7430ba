#!/usr/bin/env node
// Entry point. Runs the compiled CLI in dist/ (`npm run build`; `npm install` builds it through the
// `prepare` script). Runs the TypeScript sources through tsx instead when SLUICE_DEV=1 (`npm run
// dev`, and the tests) or when there is no dist/ (a checkout whose build was skipped).
import { existsSync } from 'node:fs';

const built = new URL('../dist/cli/main.js', import.meta.url);
if (process.env.SLUICE_DEV !== '1' && existsSync(built)) {
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

// The `sluice` command line.
import { readFileSync } from 'node:fs';
import { isSluiceError } from '../core/errors.ts';
import { HELP, usageOf, wantsHelp } from './usage.ts';

/** package.json sits two levels up from this module, in the sources (src/cli) and in the build (dist/cli). */
function version(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') { process.stdout.write(HELP); return 0; }
  if (command === '--version' || command === '-v' || command === 'version') { process.stdout.write(`sluice ${version()}\n`); return 0; }
  if (command === 'help') {
    const text = rest[0] === undefined ? HELP : usageOf(rest[0]);
    if (text === undefined) { process.stderr.write(`unknown command "${rest[0]}"\n\n${HELP}`); return 2; }
    process.stdout.write(text);
    return 0;
  }
  const usage = usageOf(command);
  if (usage === undefined) { process.stderr.write(`unknown command "${command}"\n\n${HELP}`); return 2; }
  // Help is answered here, before the command's module loads: `migrate --help` migrates nothing.
  if (wantsHelp(rest)) { process.stdout.write(usage); return 0; }
  switch (command) {
    case 'start': return (await import('./start.ts')).start(rest);
    case 'up': return (await import('./up.ts')).up(rest);
    case 'sim-model': return (await import('./sim-model-command.ts')).simModel(rest);
    case 'chat': return (await import('./chat.ts')).chat(rest);
    case 'migrate': return (await import('./migrate.ts')).migrate(rest);
    default: return (await import('./admin.ts')).admin(command === 'admin' ? rest : [command, ...rest]);
  }
}

/** parseArgs' errors (an unknown flag, a missing value) are usage errors: exit 2 with the usage. */
const isUsageError = (err: unknown) => err instanceof TypeError && String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS');

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err: unknown) => {
  if (isUsageError(err)) {
    console.error(`error: ${(err as Error).message}\n\n${usageOf(process.argv[2] ?? '') ?? HELP}`);
    process.exitCode = 2;
    return;
  }
  if (isSluiceError(err)) console.error(`error: ${err.code}: ${err.message}`);
  else console.error(err instanceof Error ? `error: ${err.message}` : err);
  // Exit now: a driver still retrying in the background (a half-open broker connection) must not
  // keep a failed start alive. stderr is written synchronously to files, pipes and terminals.
  process.exit(1);
});

// `sluice migrate [--dry-run]`: applies the pending SQL migrations to DATABASE_URL, or lists them.
import { createStore } from '../adapters/store/factory.ts';
import { redact } from '../adapters/url-scheme.ts';
import { loadConfig } from '../config.ts';
import { flags } from './flags.ts';

export async function migrate(args: string[]): Promise<number> {
  const { values } = flags(args, { 'dry-run': { type: 'boolean' } });
  const config = loadConfig();
  const target = redact(config.databaseUrl);
  const store = await createStore(config.databaseUrl, { migrate: false });
  try {
    if (values['dry-run']) {
      const pending = await store.pendingMigrations();
      process.stdout.write(pending.length === 0
        ? `${target}: up to date, no pending migration\n`
        : `${target}: ${pending.length} pending migration(s), not applied (--dry-run):\n${pending.map((v) => `  ${v}\n`).join('')}`);
      return 0;
    }
    const applied = await store.migrate();
    process.stdout.write(applied.length === 0
      ? `${target}: up to date, no migration applied\n`
      : `migrations applied to ${target}: ${applied.join(', ')}\n`);
    return 0;
  } finally {
    await store.close();
  }
}

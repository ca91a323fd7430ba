// The `sluice` command line.
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.ts';
import { isSluiceError } from '../core/errors.ts';
import { redact } from '../adapters/url-scheme.ts';

const HELP = `sluice — an LLM inference gateway

Usage: sluice <command> [options]

Commands:
  start [--role all|gateway|worker|ledger] [--port N] [--host H]
                      Start Sluice (default role: all, on the embedded default:
                      PGlite in ./.sluice, in-memory queue, bus and limiter, simulated model)
  up [--gateways 2] [--workers 2] [--port 8080] [--no-ledger]
                      Run a local deployment: N gateways on consecutive ports, M workers and a
                      ledger, as child processes sharing the services named by the environment
  sim-model [--port 9100] [--host 127.0.0.1] [--ttft-ms 20] [--itl-ms 5] [--api-key KEY]
            [--fail-rate 0] [--fail-seed 1] [--embedding-dim 256] [--models a,b] [--no-usage]
                      Run a standalone OpenAI-compatible simulated model server (tool calls,
                      JSON mode, n choices, logprobs, embeddings; key also SIM_MODEL_API_KEY)
  chat "prompt" [--url URL] [--key KEY] [--model sim] [--max-tokens 64] [--mode queued|direct]
                      Stream a chat completion and print tokens as they arrive
  migrate             Apply database migrations to DATABASE_URL and exit
  users|keys|quotas|tiers|usage ...
                      Manage users, API keys, tiers and quotas; export usage (sluice admin --help)
  --help              Show this help

Configuration comes from ./sluice.config.json (or SLUICE_CONFIG) and the environment:
  PORT, HOST, DATABASE_URL, LIMITER_URL, QUEUE_URL, BUS_URL, MODEL_URL, SLUICE_MASTER_KEY,
  SLUICE_DELIVERY_MODE, LOG_LEVEL … (see README.md).
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined: case '--help': case '-h': case 'help':
      process.stdout.write(HELP); return 0;
    case 'start': return (await import('./start.ts')).start(rest);
    case 'up': return (await import('./up.ts')).up(rest);
    case 'sim-model': return (await import('./sim-model-command.ts')).simModel(rest);
    case 'chat': return (await import('./chat.ts')).chat(rest);
    case 'admin': case 'users': case 'keys': case 'quotas': case 'tiers': case 'usage':
      return (await import('./admin.ts')).admin(command === 'admin' ? rest : [command, ...rest]);
    case 'migrate': {
      const { createStore } = await import('../adapters/store/factory.ts');
      const config = loadConfig();
      const store = await createStore(config.databaseUrl, { migrate: true });
      await store.close();
      console.log(`migrations applied to ${redact(config.databaseUrl)}`);
      return 0;
    }
    default:
      process.stderr.write(`unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

/** Shared flag parsing: unknown flags are an error with the command's usage. */
export function flags<T extends Record<string, { type: 'string' | 'boolean'; short?: string }>>(args: string[], options: T) {
  return parseArgs({ args, options, allowPositionals: true, strict: true });
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err: unknown) => {
  if (isSluiceError(err)) console.error(`error: ${err.code}: ${err.message}`);
  else console.error(err instanceof Error ? `error: ${err.message}` : err);
  process.exitCode = 1;
});

// The command line's help texts, in one place: `sluice --help`, `sluice <command> --help` and the
// usage lines a command prints on a bad flag. Reading them loads nothing else, so `--help` on any
// command runs none of it.

export const HELP = `sluice — an LLM inference gateway

Usage: sluice <command> [options]

Commands:
  start [--role all|gateway|worker|ledger|edge] [--port N] [--host H]
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
  migrate [--dry-run] Apply database migrations to DATABASE_URL and exit (--dry-run: list them)
  users|keys|quotas|tiers|usage ...
                      Manage users, API keys, tiers and quotas; export usage (sluice admin --help)
  help [command]      Show this help, or a command's
  --help, -h          Show this help (after a command: that command's help)
  --version, -v       Print the version

Configuration comes from ./sluice.config.json (or SLUICE_CONFIG) and the environment:
  PORT, HOST, DATABASE_URL, LIMITER_URL, QUEUE_URL, BUS_URL, MODEL_URL, SLUICE_MASTER_KEY,
  SLUICE_DELIVERY_MODE, LOG_LEVEL … (see README.md).
`;

const START = `Usage: sluice start [--role all|gateway|worker|ledger|edge] [--port N] [--host H]

Starts one Sluice process in a role and prints where it listens:
  all       every role in one process (default; the embedded default needs no other service)
  gateway   the HTTP API (OpenAI-compatible, asynchronous requests, SSE, WebSocket, admin)
  worker    consumes the queue and calls the model (serves /healthz, /readyz, /metrics on PORT)
  ledger    the sweeper: re-publishes orphaned requests, reclaims expired reservations
  edge      the gateway's API near the users: admits against the origin's store, limiter and
            queue, reads events through a NATS leaf node (BUS_URL nats://leaf:4222?domain=hub)

Options (each overrides its environment variable):
  --role ROLE   SLUICE_ROLE (prefer SLUICE_ROLE in containers: the health check reads it)
  --port N      PORT (default 8080; 0 picks a free port)
  --host H      HOST (default 127.0.0.1)

Before anything opens, every URL (DATABASE_URL, LIMITER_URL, QUEUE_URL, BUS_URL, MODEL_URL) is
checked and the port is tried; a failure exits 1 with SLUICE_ERR_* and what to do
(docs/operations.md, "Start-up errors"). SIGTERM or SIGINT closes it gracefully.
`;

const UP = `Usage: sluice up [--gateways 2] [--workers 2] [--port 8080] [--no-ledger] [--stop-timeout-ms 10000]

Runs a whole deployment on one machine: migrates once, then starts N gateways on ports PORT..,
M workers and a ledger on the ports after them, as child processes sharing the services the
environment names (QUEUE_URL, BUS_URL and DATABASE_URL must be shareable: not memory:// or pglite:).
Ctrl-C or SIGTERM stops every child (SIGKILL after --stop-timeout-ms).
`;

const SIM_MODEL = `Usage: sluice sim-model [--port 9100] [--host 127.0.0.1] [--ttft-ms 20] [--itl-ms 5] [--api-key KEY]
                        [--fail-rate 0] [--fail-seed 1] [--embedding-dim 256] [--models a,b] [--no-usage]

Runs a standalone OpenAI-compatible simulated model server (GET /v1/models, POST
/v1/chat/completions, /v1/completions and /v1/embeddings, streaming or not): deterministic tool
calls when tools are given, JSON under response_format, n choices, logprobs. Point Sluice at it
with MODEL_URL=http://HOST:PORT/v1 (or a catalogue deployment).
  --ttft-ms N         time to first token
  --itl-ms N          delay between tokens
  --api-key KEY       require Authorization: Bearer KEY (also SIM_MODEL_API_KEY); else 401
  --fail-rate P       fail a request with HTTP 500 before its first token with probability P
  --fail-seed S       seed of those draws
  --embedding-dim N   embedding dimensions when the request names none (default 256)
  --models a,b        more model ids to serve besides sim
  --no-usage          never report usage (as servers that ignore include_usage)
`;

const CHAT = `Usage: sluice chat "prompt" [--url URL] [--key KEY] [--model sim] [--max-tokens 64] [--mode queued|direct]

Streams a chat completion from a running gateway, printing tokens as they arrive, then the time
to first token and the throughput (on stderr).
  --url URL       the gateway (default SLUICE_URL, else http://127.0.0.1:PORT)
  --key KEY       an API key (default SLUICE_API_KEY, SLUICE_MASTER_KEY, else ./.sluice/dev-key)
  --model ID      model id (default sim)
  --max-tokens N  (default 64)
  --mode M        queued or direct (x-sluice-mode)
`;

const MIGRATE = `Usage: sluice migrate [--dry-run]

Applies the pending SQL migrations to DATABASE_URL in one transaction (behind an advisory lock,
so concurrent runs are safe) and exits. Every process also migrates at start unless
SLUICE_MIGRATE=false.
  --dry-run   list the pending migrations without applying them (exit 0)
`;

export const ADMIN = `Admin commands (talk to a running gateway; --url, --key or SLUICE_URL, SLUICE_MASTER_KEY / ./.sluice/dev-key):
  sluice users create [--id ID] [--name NAME] [--email EMAIL] [--tier TIER]
  sluice users list
  sluice users update ID [--tier TIER] [--name NAME] [--email EMAIL]
  sluice users deactivate ID | activate ID
  sluice users usage ID
  sluice keys create --user ID [--name NAME] [--admin] [--models M1,M2] [--inspection MODE]
                         (prints the key once; --models: the only models the key may use, within
                         its tier's list; --inspection: disabled|inline|async|hybrid, over its tier's)
  sluice keys list [--user ID]
  sluice keys revoke KEY_ID
  sluice quotas get USER
  sluice quotas set USER [--requests-per-day N] [--tokens-per-day N] [--requests-per-month N]
                         [--tokens-per-month N] [--max-tokens N] [--concurrent-streams N] [--priority 0-9]
  sluice quotas clear USER
  sluice tiers
  sluice usage export [--from DATE] [--to DATE] [--user ID]   (CSV on stdout)
`;

const COMMANDS: Record<string, string> = {
  start: START, up: UP, 'sim-model': SIM_MODEL, chat: CHAT, migrate: MIGRATE,
  admin: ADMIN, users: ADMIN, keys: ADMIN, quotas: ADMIN, tiers: ADMIN, usage: ADMIN,
};

/** The help text of a command, or undefined for a command that does not exist. */
export function usageOf(command: string): string | undefined {
  return Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
}

/** Whether the arguments ask for help: --help or -h anywhere before a `--` terminator. */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

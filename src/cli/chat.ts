// `sluice chat "prompt"`: streams a chat completion from a running gateway, printing tokens as
// they arrive, then the time to first token and the throughput.
import { sseData } from '../adapters/model/sse-data.ts';
import { readDevKey } from '../core/api-keys.ts';
import { flags } from './flags.ts';

/** The key for CLI calls: --key, SLUICE_API_KEY, SLUICE_MASTER_KEY, else the development key file. */
export function cliKey(explicit: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (explicit) return explicit;
  if (env.SLUICE_API_KEY) return env.SLUICE_API_KEY;
  if (env.SLUICE_MASTER_KEY) return env.SLUICE_MASTER_KEY;
  return readDevKey(env.SLUICE_DATA_DIR ?? './.sluice');
}

export function cliUrl(explicit: string | undefined, env: NodeJS.ProcessEnv): string {
  return (explicit ?? env.SLUICE_URL ?? `http://127.0.0.1:${env.PORT ?? 8080}`).replace(/\/+$/, '').replace(/\/v1$/, '');
}

export async function chat(args: string[]): Promise<number> {
  const { values, positionals } = flags(args, {
    url: { type: 'string' }, key: { type: 'string' }, model: { type: 'string' }, 'max-tokens': { type: 'string' }, mode: { type: 'string' },
  });
  const prompt = positionals.join(' ');
  if (!prompt) { console.error('usage: sluice chat "prompt" [--url URL] [--key KEY] [--model sim] [--max-tokens 64] [--mode queued|direct]'); return 2; }
  const url = cliUrl(values.url, process.env);
  const key = cliKey(values.key, process.env);
  if (!key) { console.error('no API key: pass --key, set SLUICE_API_KEY, or start Sluice once to create ./.sluice/dev-key'); return 2; }
  const started = performance.now();
  let res: Response;
  try {
    res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...(values.mode && { 'x-sluice-mode': values.mode }) },
      body: JSON.stringify({ model: values.model ?? 'sim', stream: true, stream_options: { include_usage: true }, max_tokens: Number(values['max-tokens'] ?? 64), messages: [{ role: 'user', content: prompt }] }),
    });
  } catch (err) {
    console.error(`cannot reach ${url}: ${(err as Error).message} (is Sluice running? npm start)`);
    return 1;
  }
  if (!res.ok || !res.body) { console.error(`HTTP ${res.status}: ${await res.text()}`); return 1; }
  let first = 0;
  let tokens = 0;
  let usage: { prompt_tokens: number; completion_tokens: number } | undefined;
  for await (const data of sseData(res.body)) {
    if (!data || data === '[DONE]') continue;
    const chunk = JSON.parse(data) as { error?: { code: string; message: string }; usage?: typeof usage; choices?: { delta?: { content?: string } }[] };
    if (chunk.error) { console.error(`\nerror: ${chunk.error.code}: ${chunk.error.message}`); return 1; }
    if (chunk.usage) usage = chunk.usage;
    const text = chunk.choices?.[0]?.delta?.content;
    if (text) { if (!first) first = performance.now(); tokens++; process.stdout.write(text); }
  }
  const total = (performance.now() - started) / 1000;
  const ttft = first ? (first - started) / 1000 : total;
  process.stdout.write('\n');
  console.error(`\n[request ${res.headers.get('x-request-id')}] time to first token ${(ttft * 1000).toFixed(0)} ms, ${tokens} tokens in ${total.toFixed(2)} s (${(tokens / Math.max(total - ttft, 1e-3)).toFixed(1)} tokens/s)${usage ? `, usage ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion` : ''}`);
  return 0;
}

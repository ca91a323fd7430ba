// What one request row costs PGlite to write, by what it holds: the insert of the realistic body's
// payload (bench/routing.ts, tools included) and the finish that adds a 64-token answer, one row
// per statement, in variants interleaved operation by operation (the order flips every step) so
// that a shared, loaded machine slows every variant alike. Prints the median µs per statement.
//   full: the output as earlier versions wrote it, choice 0's text in `output` and `result`
//   lean: the compact form that the store writes now (storedOutput in sql-store.ts), the text in `result` only
//   +toast8k: the same on a copy of the table with toast_tuple_target = 8160, where a row under
//             8 kB is never compressed; also prints both tables' sizes
// The statements are the shape of the store's (PREPAREd, run as EXECUTE over the simple protocol,
// as pglite.ts does), single-row, on PGlite on disk, with the store's migrations applied.
// env: REQUESTS per variant (3000), WARMUP (300)
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storedOutput } from '../src/adapters/store/sql-store.ts';
import type { RequestOutput } from '../src/ports/store.ts';
import { log, main, median, r2, realisticChatBody, REPO, table } from './lib.ts';

const N = Number(process.env.REQUESTS ?? 3000);
const WARMUP = Number(process.env.WARMUP ?? 300);

main('store-row', 10 * 60_000, async () => {
  const { PGlite } = await import('@electric-sql/pglite');
  const db = await PGlite.create(join(mkdtempSync(join(tmpdir(), 'sluice-store-row-')), 'db'));
  const migrations = join(REPO, 'src/adapters/store/migrations');
  for (const f of readdirSync(migrations).filter((f) => f.endsWith('.sql')).sort()) await db.exec(readFileSync(join(migrations, f), 'utf8'));
  await db.exec(`CREATE TABLE requests_toast8k (LIKE requests INCLUDING ALL); ALTER TABLE requests_toast8k SET (toast_tuple_target = 8160)`);
  for (const t of ['requests', 'requests_toast8k']) {
    await db.exec(`PREPARE ins_${t} AS INSERT INTO ${t} (request_id, user_id, model, mode, payload, body_hash, estimated_tokens, prompt_tokens, status)
      VALUES ($1, 'u', 'sim', 'direct', $2::jsonb, '', 400, 300, 'running')`);
    await db.exec(`PREPARE fin_${t} AS UPDATE ${t} SET status = 'completed', result = $2, output = $3::jsonb, completed_at = now() WHERE request_id = $1`);
  }

  const body = JSON.parse(realisticChatBody(false, 64)) as { messages: unknown; tools: unknown; user: string };
  const payload = JSON.stringify({ messages: body.messages, maxTokens: 64, temperature: 0.7, topP: 0.95, stream: false, params: { tools: body.tools, user: body.user } });
  const text = Array.from({ length: 64 }, (_, i) => `tok${i} `).join('');
  const output: RequestOutput = { choices: [{ index: 0, content: text, toolCalls: [], finishReason: 'stop' }], usageSource: 'reported', served: { deployment: 'sim', model: 'sim' } };
  const full = JSON.stringify(output), lean = JSON.stringify(storedOutput(output, text));
  const variants: [string, string, string][] = [
    ['full', 'requests', full], ['lean', 'requests', lean], ['full +toast8k', 'requests_toast8k', full], ['lean +toast8k', 'requests_toast8k', lean],
  ];
  const quote = (s: string) => `'${s.replaceAll("'", "''")}'`;
  const timed = async (sql: string): Promise<number> => { const t0 = performance.now(); await db.exec(sql); return (performance.now() - t0) * 1000; };
  const inserts = new Map<string, number[]>(), finishes = new Map<string, number[]>();
  let id = 0;
  log(`${variants.length} variants, ${N} requests each after ${WARMUP} of warm-up; payload ${payload.length} B, output ${full.length} B full, ${lean.length} B lean`);
  for (let i = 0; i < N + WARMUP; i++) {
    for (const [name, t, out] of i % 2 ? [...variants].reverse() : variants) {
      const rid = quote(`r${id++}`);
      const ins = await timed(`EXECUTE ins_${t}(${rid}, ${quote(payload)})`);
      const fin = await timed(`EXECUTE fin_${t}(${rid}, ${quote(text)}, ${quote(out)})`);
      if (i < WARMUP) continue;
      (inserts.get(name) ?? inserts.set(name, []).get(name)!).push(ins);
      (finishes.get(name) ?? finishes.set(name, []).get(name)!).push(fin);
    }
  }
  const sizes = (await db.query<{ t: string; bytes: number }>(
    `SELECT 'requests' AS t, pg_total_relation_size('requests') AS bytes UNION ALL SELECT 'requests_toast8k', pg_total_relation_size('requests_toast8k')`)).rows;
  await db.close();
  console.log(`\nOne row per statement on PGlite (on disk), medians of ${N} each, variants interleaved`);
  console.log(table(variants.map(([name]) => ({
    variant: name, 'insert µs': r2(median(inserts.get(name)!)), 'finish µs': r2(median(finishes.get(name)!)),
  }))));
  console.log(table(sizes.map((s) => ({ table: s.t, rows: 2 * (N + WARMUP), 'MiB (with indexes and TOAST)': r2(Number(s.bytes) / 2 ** 20) }))));
});

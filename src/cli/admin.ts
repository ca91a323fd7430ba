// `sluice users|keys|quotas|usage …`: the admin API from the command line. It talks to a running
// gateway (the embedded PGlite store belongs to the server process, so the CLI does not open it).
import { flags } from './flags.ts';
import { cliKey, cliUrl } from './chat.ts';
import { ADMIN as HELP } from './usage.ts';

const COMMON = { url: { type: 'string' as const }, key: { type: 'string' as const } };
const QUOTA_FLAGS = ['requests-per-day', 'tokens-per-day', 'requests-per-month', 'tokens-per-month', 'max-tokens', 'concurrent-streams', 'priority'] as const;

export async function admin(args: string[]): Promise<number> {
  const [group, action, ...rest] = args;
  if (!group || group === '--help' || group === 'help' || action === '--help') { process.stdout.write(HELP); return group ? 0 : 2; }
  const { values, positionals } = flags(rest, {
    ...COMMON, id: { type: 'string' }, name: { type: 'string' }, email: { type: 'string' }, tier: { type: 'string' },
    user: { type: 'string' }, admin: { type: 'boolean' }, models: { type: 'string' }, inspection: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' },
    ...Object.fromEntries(QUOTA_FLAGS.map((f) => [f, { type: 'string' as const }])),
  });
  const base = cliUrl(values.url, process.env);
  const key = cliKey(values.key, process.env);
  if (!key) { console.error('no admin key: pass --key, set SLUICE_MASTER_KEY, or run from the directory holding ./.sluice/dev-key'); return 2; }
  const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    let res: Response;
    try {
      res = await fetch(base + path, { method, headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }) }, ...(body !== undefined && { body: JSON.stringify(body) }) });
    } catch (err) { throw new Error(`cannot reach ${base}: ${(err as Error).message} (is Sluice running?)`); }
    const text = await res.text();
    if (!res.ok) {
      let msg = text;
      try { const e = (JSON.parse(text) as { error: { code: string; message: string } }).error; msg = `${e.code}: ${e.message}`; } catch { /* not JSON */ }
      throw new Error(`HTTP ${res.status} ${msg}`);
    }
    return res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text;
  };
  const print = (v: unknown) => { process.stdout.write(typeof v === 'string' ? v : `${JSON.stringify(v, null, 2)}\n`); return 0; };
  const arg = (what: string) => { const v = positionals[0]; if (!v) throw new Error(`missing ${what}; see sluice admin --help`); return encodeURIComponent(v); };

  switch (`${group} ${action ?? ''}`.trim()) {
    case 'users create': return print(await call('POST', '/admin/users', { ...(values.id && { id: values.id }), ...(values.name && { name: values.name }), ...(values.email && { email: values.email }), ...(values.tier && { tier: values.tier }) }));
    case 'users list': return print(await call('GET', '/admin/users'));
    case 'users update': return print(await call('PATCH', `/admin/users/${arg('user id')}`, { ...(values.tier && { tier: values.tier }), ...(values.name && { name: values.name }), ...(values.email && { email: values.email }) }));
    case 'users deactivate': return print(await call('PATCH', `/admin/users/${arg('user id')}`, { active: false }));
    case 'users activate': return print(await call('PATCH', `/admin/users/${arg('user id')}`, { active: true }));
    case 'users usage': return print(await call('GET', `/admin/users/${arg('user id')}/usage`));
    case 'keys create': {
      if (!values.user) throw new Error('keys create needs --user ID');
      const models = values.models?.split(',').map((m) => m.trim()).filter(Boolean);
      if (values.models !== undefined && !models?.length) throw new Error('--models needs at least one model id (comma-separated)');
      const k = await call('POST', '/admin/keys', { user_id: values.user, ...(values.name && { name: values.name }), ...(values.admin && { admin: true }), ...(models && { models }), ...(values.inspection && { inspection_mode: values.inspection }) }) as { key: string; id: string };
      console.error(`created key ${k.id} for ${values.user}; it is shown once:`);
      process.stdout.write(`${k.key}\n`);
      return 0;
    }
    case 'keys list': return print(await call('GET', `/admin/keys${values.user ? `?user_id=${encodeURIComponent(values.user)}` : ''}`));
    case 'keys revoke': return print(await call('DELETE', `/admin/keys/${arg('key id')}`));
    case 'quotas get': return print(await call('GET', `/admin/quotas/${arg('user id')}`));
    case 'quotas set': {
      const body: Record<string, number> = {};
      for (const f of QUOTA_FLAGS) {
        const v = (values as Record<string, string | boolean | undefined>)[f];
        if (v === undefined) continue;
        if (typeof v !== "string" || !/^-?\d+$/.test(v)) throw new Error(`--${f} must be an integer`);
        body[f.replaceAll('-', '_')] = Number(v);
      }
      const current = (await call('GET', `/admin/quotas/${arg('user id')}`)) as { override: Record<string, number | null> | null };
      return print(await call('PUT', `/admin/quotas/${arg('user id')}`, { ...(current.override ?? {}), ...body }));
    }
    case 'quotas clear': return print(await call('DELETE', `/admin/quotas/${arg('user id')}`));
    case 'tiers': return print(await call('GET', '/admin/tiers'));
    case 'usage export': {
      const q = new URLSearchParams({ ...(values.from && { from: values.from }), ...(values.to && { to: values.to }), ...(values.user && { user_id: values.user }) });
      return print(await call('GET', `/admin/usage.csv?${q}`));
    }
    default:
      process.stderr.write(`unknown admin command "${group} ${action ?? ''}"\n\n${HELP}`);
      return 2;
  }
}

// Administration (master or admin key): users (create, change tier, deactivate), keys (create and
// show once, list, revoke), quota overrides beside the tier's limits, tiers, recent requests across
// users with filters, and the usage CSV export. Destructive actions ask for confirmation.
import { useEffect, useState } from 'preact/hooks';
import { call, describeError, getJson, type KeyView, type Tier, type UserView } from '../api.ts';
import { num, when } from '../format.ts';
import { RequestTable, usePagedRequests } from './my-usage.tsx';

const QUOTA_FIELDS = ['requests_per_day', 'tokens_per_day', 'requests_per_month', 'tokens_per_month', 'max_tokens', 'concurrent_streams', 'priority'] as const;
type QuotaField = (typeof QUOTA_FIELDS)[number];
const TIER_FIELD: Record<QuotaField, string> = {
  requests_per_day: 'requestsPerDay', tokens_per_day: 'tokensPerDay', requests_per_month: 'requestsPerMonth', tokens_per_month: 'tokensPerMonth',
  max_tokens: 'maxTokens', concurrent_streams: 'concurrentStreams', priority: 'priority',
};

function Flash(props: { msg: { ok: boolean; text: string } | null }) {
  if (!props.msg) return null;
  return <p role={props.msg.ok ? 'status' : 'alert'} class={props.msg.ok ? 'ok' : 'error'}>{props.msg.text}</p>;
}

export function Admin() {
  const [users, setUsers] = useState<UserView[]>([]);
  const [keys, setKeys] = useState<KeyView[]>([]);
  const [tiers, setTiers] = useState<{ default_tier: string; tiers: Record<string, Tier> } | null>(null);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const refresh = async () => {
    try {
      const [u, k, t] = await Promise.all([
        getJson<{ data: UserView[] }>('/admin/users'), getJson<{ data: KeyView[] }>('/admin/keys'),
        getJson<{ default_tier: string; tiers: Record<string, Tier> }>('/admin/tiers'),
      ]);
      setUsers(u.data); setKeys(k.data); setTiers(t);
    } catch (e) { setMsg({ ok: false, text: describeError(e) }); }
  };
  useEffect(() => { void refresh(); }, []);
  const act = async (what: () => Promise<unknown>, done: string) => {
    try { await what(); setMsg({ ok: true, text: done }); await refresh(); } catch (e) { setMsg({ ok: false, text: describeError(e) }); }
  };
  const tierNames = tiers ? Object.keys(tiers.tiers) : [];
  return (
    <section>
      <h1 tabIndex={-1}>Admin</h1>
      <nav aria-label="Admin sections" class="toc">
        <a href="#admin-users" onClick={jump}>Users</a> · <a href="#admin-keys" onClick={jump}>Keys</a> · <a href="#admin-quotas" onClick={jump}>Quotas</a> · <a href="#admin-tiers" onClick={jump}>Tiers</a> · <a href="#admin-requests" onClick={jump}>Requests</a> · <a href="#admin-export" onClick={jump}>Usage export</a>
      </nav>
      <Flash msg={msg} />
      <Users users={users} tierNames={tierNames} defaultTier={tiers?.default_tier ?? ''} act={act} />
      <Keys users={users} keys={keys} act={act} />
      <Quotas users={users} tiers={tiers?.tiers ?? {}} />
      <Tiers tiers={tiers} />
      <Requests />
      <Export />
    </section>
  );
}

/** In-page section links without touching the hash route. */
function jump(e: Event) {
  e.preventDefault();
  const id = (e.currentTarget as HTMLAnchorElement).getAttribute('href')!.slice(1);
  const el = document.getElementById(id);
  el?.scrollIntoView();
  el?.querySelector<HTMLElement>('h2')?.focus();
}

type Act = (what: () => Promise<unknown>, done: string) => Promise<void>;

function Users(props: { users: UserView[]; tierNames: string[]; defaultTier: string; act: Act }) {
  const [id, setId] = useState('');
  const [name, setName] = useState('');
  const [tier, setTier] = useState('');
  const create = (e: Event) => {
    e.preventDefault();
    void props.act(() => call('/admin/users', { method: 'POST', json: { id: id.trim() || undefined, name: name.trim() || null, tier: tier || props.defaultTier } }), `Created user ${id || '(generated id)'}`)
      .then(() => { setId(''); setName(''); });
  };
  const patch = (u: UserView, body: Record<string, unknown>, done: string) => props.act(() => call(`/admin/users/${encodeURIComponent(u.id)}`, { method: 'PATCH', json: body }), done);
  return (
    <section id="admin-users" aria-labelledby="h-users">
      <h2 id="h-users" tabIndex={-1}>Users</h2>
      <form class="inline" onSubmit={create} aria-label="Create a user">
        <div><label for="new-user-id">User id</label><input id="new-user-id" value={id} pattern="[A-Za-z0-9_.@\-]{1,50}" onInput={(e) => setId(e.currentTarget.value)} /></div>
        <div><label for="new-user-name">Name</label><input id="new-user-name" value={name} maxLength={100} onInput={(e) => setName(e.currentTarget.value)} /></div>
        <div><label for="new-user-tier">Tier</label>
          <select id="new-user-tier" value={tier || props.defaultTier} onChange={(e) => setTier(e.currentTarget.value)}>{props.tierNames.map((t) => <option key={t}>{t}</option>)}</select></div>
        <button type="submit">Create user</button>
      </form>
      <div class="table-wrap">
        <table data-testid="users-table">
          <thead><tr><th scope="col">Id</th><th scope="col">Name</th><th scope="col">Tier</th><th scope="col">Active</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
          <tbody>{props.users.map((u) => (
            <tr key={u.id}>
              <td>{u.id}</td><td>{u.name ?? '—'}</td>
              <td><label class="sr-only" for={`tier-${u.id}`}>Tier of {u.id}</label>
                <select id={`tier-${u.id}`} value={u.tier} onChange={(e) => void patch(u, { tier: e.currentTarget.value }, `${u.id} is now on tier ${e.currentTarget.value}`)}>
                  {props.tierNames.map((t) => <option key={t}>{t}</option>)}</select></td>
              <td>{u.active ? 'yes' : 'no'}</td><td>{when(u.created_at)}</td>
              <td>{u.active
                ? <button type="button" class="danger small" onClick={() => { if (window.confirm(`Deactivate ${u.id}? Every key of this user is refused until it is activated again.`)) void patch(u, { active: false }, `Deactivated ${u.id}`); }}>Deactivate</button>
                : <button type="button" class="secondary small" onClick={() => void patch(u, { active: true }, `Activated ${u.id}`)}>Activate</button>}</td>
            </tr>
          ))}</tbody>
        </table>
      </div>
    </section>
  );
}

function Keys(props: { users: UserView[]; keys: KeyView[]; act: Act }) {
  const [userId, setUserId] = useState('');
  const [name, setName] = useState('');
  const [created, setCreated] = useState<{ key: string; id: string; user: string } | null>(null);
  const [copied, setCopied] = useState(false);
  const user = userId || props.users[0]?.id || '';
  const create = async (e: Event) => {
    e.preventDefault();
    await props.act(async () => {
      const k = await getJson<KeyView & { key: string }>('/admin/keys', { method: 'POST', json: { user_id: user, name: name.trim() || null } });
      setCreated({ key: k.key, id: k.id, user: k.user_id });
      setCopied(false);
    }, `Created a key for ${user}`);
  };
  const revoke = (k: KeyView) => {
    if (!window.confirm(`Revoke key ${k.prefix}… of ${k.user_id}? Requests with it are refused from now on; this cannot be undone.`)) return;
    void props.act(() => call(`/admin/keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' }), `Revoked ${k.id}`);
  };
  const copy = async () => { if (created) { await navigator.clipboard.writeText(created.key).catch(() => {}); setCopied(true); } };
  return (
    <section id="admin-keys" aria-labelledby="h-keys">
      <h2 id="h-keys" tabIndex={-1}>API keys</h2>
      <form class="inline" onSubmit={create} aria-label="Create an API key">
        <div><label for="new-key-user">User</label>
          <select id="new-key-user" value={user} onChange={(e) => setUserId(e.currentTarget.value)}>{props.users.map((u) => <option key={u.id}>{u.id}</option>)}</select></div>
        <div><label for="new-key-name">Key name</label><input id="new-key-name" value={name} maxLength={100} onInput={(e) => setName(e.currentTarget.value)} /></div>
        <button type="submit" disabled={!user}>Create key</button>
      </form>
      {created && (
        <div class="once" role="status">
          <p>New key for <strong>{created.user}</strong> ({created.id}). It is shown <strong>once</strong>; only its hash is stored.</p>
          <label for="created-key">New API key</label>
          <input id="created-key" data-testid="created-key" readOnly value={created.key} onFocus={(e) => e.currentTarget.select()} />
          <button type="button" class="secondary small" onClick={copy}>{copied ? 'Copied' : 'Copy'}</button>
          <button type="button" class="secondary small" onClick={() => setCreated(null)}>Hide</button>
        </div>
      )}
      <div class="table-wrap">
        <table data-testid="keys-table">
          <thead><tr><th scope="col">Key</th><th scope="col">User</th><th scope="col">Name</th><th scope="col">Admin</th><th scope="col">Created</th><th scope="col">Revoked</th><th scope="col">Actions</th></tr></thead>
          <tbody>{props.keys.map((k) => (
            <tr key={k.id}>
              <td><code>{k.prefix}…</code> <span class="small">{k.id}</span></td><td>{k.user_id}</td><td>{k.name ?? '—'}</td><td>{k.admin ? 'yes' : 'no'}</td>
              <td>{when(k.created_at)}</td><td>{when(k.revoked_at)}</td>
              <td>{k.revoked_at ? '—' : <button type="button" class="danger small" aria-label={`Revoke key ${k.id}`} onClick={() => revoke(k)}>Revoke</button>}</td>
            </tr>
          ))}</tbody>
        </table>
      </div>
    </section>
  );
}

function Quotas(props: { users: UserView[]; tiers: Record<string, Tier> }) {
  const [userId, setUserId] = useState('');
  const [state, setState] = useState<{ tier: string; override: Record<QuotaField, number | null> | null; effective: Record<string, number> } | null>(null);
  const [draft, setDraft] = useState<Record<QuotaField, string>>(Object.fromEntries(QUOTA_FIELDS.map((f) => [f, ''])) as Record<QuotaField, string>);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const user = userId || props.users[0]?.id || '';
  const show = (s: NonNullable<typeof state>) => {
    setState(s);
    setDraft(Object.fromEntries(QUOTA_FIELDS.map((f) => [f, s.override?.[f] === null || s.override?.[f] === undefined ? '' : String(s.override[f])])) as Record<QuotaField, string>);
  };
  useEffect(() => {
    if (!user) return;
    getJson<NonNullable<typeof state>>(`/admin/quotas/${encodeURIComponent(user)}`).then(show, (e) => setMsg({ ok: false, text: describeError(e) }));
  }, [user]);
  const save = async (e: Event) => {
    e.preventDefault();
    try {
      const body = Object.fromEntries(QUOTA_FIELDS.map((f) => [f, draft[f].trim() === '' ? null : Number(draft[f])]));
      show(await getJson(`/admin/quotas/${encodeURIComponent(user)}`, { method: 'PUT', json: body }));
      setMsg({ ok: true, text: `Saved the override of ${user}` });
    } catch (err) { setMsg({ ok: false, text: describeError(err) }); }
  };
  const clear = async () => {
    if (!window.confirm(`Remove the quota override of ${user}? Its tier's limits apply again.`)) return;
    try {
      await call(`/admin/quotas/${encodeURIComponent(user)}`, { method: 'DELETE' });
      show(await getJson(`/admin/quotas/${encodeURIComponent(user)}`));
      setMsg({ ok: true, text: `Removed the override of ${user}` });
    } catch (err) { setMsg({ ok: false, text: describeError(err) }); }
  };
  const tier = state ? props.tiers[state.tier] : undefined;
  return (
    <section id="admin-quotas" aria-labelledby="h-quotas">
      <h2 id="h-quotas" tabIndex={-1}>Quota overrides</h2>
      <label for="quota-user">User</label>
      <select id="quota-user" value={user} onChange={(e) => setUserId(e.currentTarget.value)}>{props.users.map((u) => <option key={u.id}>{u.id}</option>)}</select>
      <Flash msg={msg} />
      {state && (
        <form onSubmit={save}>
          <div class="table-wrap">
            <table>
              <caption>Limits of {user} (tier {state.tier}); an empty override inherits the tier's value.</caption>
              <thead><tr><th scope="col">Limit</th><th scope="col">Tier</th><th scope="col">Override</th><th scope="col">Effective</th></tr></thead>
              <tbody>{QUOTA_FIELDS.map((f) => (
                <tr key={f}>
                  <th scope="row">{f}</th>
                  <td>{num(tier?.[TIER_FIELD[f]] as number | undefined)}</td>
                  <td><label class="sr-only" for={`q-${f}`}>Override {f}</label>
                    <input id={`q-${f}`} type="number" min={0} value={draft[f]} onInput={(e) => setDraft({ ...draft, [f]: e.currentTarget.value })} /></td>
                  <td>{num(state.effective[TIER_FIELD[f]])}</td>
                </tr>
              ))}</tbody>
            </table>
          </div>
          <div class="actions">
            <button type="submit">Save override</button>
            <button type="button" class="danger" onClick={clear} disabled={!state.override}>Remove override</button>
          </div>
        </form>
      )}
    </section>
  );
}

function Tiers(props: { tiers: { default_tier: string; tiers: Record<string, Tier> } | null }) {
  if (!props.tiers) return null;
  const names = Object.keys(props.tiers.tiers);
  const fields = [...new Set(names.flatMap((n) => Object.keys(props.tiers!.tiers[n]!)))];
  return (
    <section id="admin-tiers" aria-labelledby="h-tiers">
      <h2 id="h-tiers" tabIndex={-1}>Tiers</h2>
      <p>Default tier: <strong>{props.tiers.default_tier}</strong>. Tiers are configuration (SLUICE_TIERS); this is what the gateway runs with.</p>
      <div class="table-wrap">
        <table>
          <thead><tr><th scope="col">Limit</th>{names.map((n) => <th scope="col" key={n}>{n}</th>)}</tr></thead>
          <tbody>{fields.map((f) => (
            <tr key={f}><th scope="row">{f}</th>{names.map((n) => {
              const v = props.tiers!.tiers[n]![f];
              return <td key={n}>{Array.isArray(v) ? v.join(', ') : typeof v === 'number' ? num(v) : v ?? '—'}</td>;
            })}</tr>
          ))}</tbody>
        </table>
      </div>
    </section>
  );
}

function Requests() {
  const [status, setStatus] = useState('');
  const [user, setUser] = useState('');
  const [model, setModel] = useState('');
  const [query, setQuery] = useState('/admin/requests?limit=25');
  const requests = usePagedRequests(query);
  const apply = (e: Event) => {
    e.preventDefault();
    const p = new URLSearchParams({ limit: '25' });
    if (status) p.set('status', status);
    if (user.trim()) p.set('user_id', user.trim());
    if (model.trim()) p.set('model', model.trim());
    setQuery(`/admin/requests?${p}`);
  };
  return (
    <section id="admin-requests" aria-labelledby="h-requests">
      <h2 id="h-requests" tabIndex={-1}>Recent requests</h2>
      <form class="inline" onSubmit={apply} aria-label="Filter requests">
        <div><label for="f-status">Status</label>
          <select id="f-status" value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
            <option value="">any</option>{['queued', 'running', 'completed', 'failed', 'cancelled'].map((s) => <option key={s}>{s}</option>)}</select></div>
        <div><label for="f-user">User id</label><input id="f-user" value={user} onInput={(e) => setUser(e.currentTarget.value)} /></div>
        <div><label for="f-model">Model</label><input id="f-model" value={model} onInput={(e) => setModel(e.currentTarget.value)} /></div>
        <button type="submit">Filter</button>
      </form>
      {requests.error && <p role="alert" class="error">{requests.error}</p>}
      <RequestTable rows={requests.rows} showUser />
      {requests.next && <button type="button" class="secondary" onClick={requests.more}>Older requests</button>}
    </section>
  );
}

function Export() {
  const today = new Date().toISOString().slice(0, 10);
  const [from, setFrom] = useState(new Date(Date.now() - 30 * 86_400_000).toISOString().slice(0, 10));
  const [to, setTo] = useState(today);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const download = async (e: Event) => {
    e.preventDefault();
    try {
      // The key goes in a header, so the file is fetched and handed to the browser as a blob.
      const end = new Date(`${to}T00:00:00Z`).getTime() + 86_400_000;
      const res = await call(`/admin/usage.csv?from=${encodeURIComponent(from)}&to=${encodeURIComponent(new Date(end).toISOString())}`);
      const blob = await res.blob();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = `usage-${from}-${to}.csv`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      setMsg({ ok: true, text: `Downloaded usage-${from}-${to}.csv (${num(blob.size)} bytes)` });
    } catch (err) { setMsg({ ok: false, text: describeError(err) }); }
  };
  return (
    <section id="admin-export" aria-labelledby="h-export">
      <h2 id="h-export" tabIndex={-1}>Usage export (CSV)</h2>
      <form class="inline" onSubmit={download} aria-label="Export usage">
        <div><label for="x-from">From</label><input id="x-from" type="date" value={from} onInput={(e) => setFrom(e.currentTarget.value)} required /></div>
        <div><label for="x-to">To (inclusive)</label><input id="x-to" type="date" value={to} onInput={(e) => setTo(e.currentTarget.value)} required /></div>
        <button type="submit">Download CSV</button>
      </form>
      <Flash msg={msg} />
    </section>
  );
}

// Sign in with an API key: checked against GET /v1/models (any valid key), then GET /admin/tiers
// tells whether it is an admin key. The key is kept in sessionStorage only.
import { useState } from 'preact/hooks';
import { ApiError, call, describeError, session } from '../api.ts';

export function SignIn(props: { onSignedIn: () => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true); setError(null);
    const k = key.trim();
    try {
      await call('/v1/models', { key: k });
      let admin = false;
      try { await call('/admin/tiers', { key: k }); admin = true; } catch (err) {
        if (!(err instanceof ApiError && err.code === 'SLUICE_ERR_ADMIN_REQUIRED')) throw err;
      }
      session.set(k, admin);
      props.onSignedIn();
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="narrow">
      <h1 tabIndex={-1}>Sign in</h1>
      <p>Use a Sluice API key. <code>npm start</code> prints the development key (also in <code>.sluice/dev-key</code>); the master key unlocks the admin pages.</p>
      <form onSubmit={submit}>
        <label for="api-key">API key</label>
        <input id="api-key" name="api-key" type="password" autoComplete="off" spellcheck={false} required value={key} onInput={(e) => setKey(e.currentTarget.value)} />
        <button type="submit" disabled={busy || key.trim() === ''}>{busy ? 'Checking…' : 'Sign in'}</button>
      </form>
      {error && <p role="alert" class="error">{error}</p>}
      <p class="hint">The key stays in this tab's session storage and is sent as an <code>Authorization</code> header, never in a URL.</p>
    </section>
  );
}

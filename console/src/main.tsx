// The console shell: hash routes (#/playground, #/usage, #/requests/<id>, #/admin, #/live), a
// sign-in gate and the navigation. Every page talks to the gateway through api.ts only.
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { session } from './api.ts';
import { SignIn } from './pages/sign-in.tsx';
import { Playground } from './pages/playground.tsx';
import { MyUsage } from './pages/my-usage.tsx';
import { RequestDetail } from './pages/request-detail.tsx';
import { Admin } from './pages/admin.tsx';
import { Live } from './pages/live.tsx';
import './styles.css';

const route = () => window.location.hash.replace(/^#\/?/, '') || 'playground';

function App() {
  const [path, setPath] = useState(route());
  const [signedIn, setSignedIn] = useState(session.key !== null);
  useEffect(() => {
    const onHash = () => setPath(route());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  // After a navigation (not on first load), move focus to the new page's heading, so keyboard and
  // screen-reader users land on it.
  const first = useRef(true);
  useEffect(() => {
    if (first.current) { first.current = false; return; }
    document.querySelector<HTMLElement>('main h1')?.focus();
  }, [path, signedIn]);

  if (!signedIn) {
    return <Shell nav={null}><SignIn onSignedIn={() => { setSignedIn(true); if (!window.location.hash) window.location.hash = '#/playground'; }} /></Shell>;
  }
  const signOut = () => { session.clear(); setSignedIn(false); window.location.hash = ''; };
  const [page, ...rest] = path.split('/');
  const links: [string, string][] = [['playground', 'Playground'], ['usage', 'My usage'], ...(session.admin ? [['admin', 'Admin'] as [string, string]] : []), ['live', 'Live']];
  const nav = (
    <nav aria-label="Console">
      <ul>
        {links.map(([href, label]) => <li key={href}><a href={`#/${href}`} aria-current={page === href ? 'page' : undefined}>{label}</a></li>)}
      </ul>
      <button type="button" class="secondary" onClick={signOut}>Sign out</button>
    </nav>
  );
  let body;
  switch (page) {
    case 'usage': body = <MyUsage />; break;
    case 'requests': body = <RequestDetail id={decodeURIComponent(rest.join('/'))} />; break;
    case 'admin': body = session.admin ? <Admin /> : <p role="alert">The admin pages need an admin key.</p>; break;
    case 'live': body = <Live />; break;
    default: body = <Playground />;
  }
  return <Shell nav={nav}>{body}</Shell>;
}

function Shell(props: { nav: preact.ComponentChildren; children: preact.ComponentChildren }) {
  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header>
        <span class="brand">Sluice console</span>
        {props.nav}
      </header>
      <main id="main">{props.children}</main>
    </>
  );
}

render(<App />, document.getElementById('app')!);

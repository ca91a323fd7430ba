// The web console in a real Chromium (Debian's `chromium`, driven by playwright-core) against a
// real gateway on the embedded default: sign in, stream a prompt and see its tokens arrive, drop
// the connection and resume without a gap (checked against the stored result), an admin creates a
// user and a key, the new key's usage page shows the request it made, a revoked key is refused.
// Every page is photographed into test-artifacts/console/ (SLUICE_SCREENSHOT_DIR).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { consoleDirs } from '../../src/http/console-routes.ts';
import { MASTER_KEY, api, startTestSluice, type TestSluice } from '../helpers/app.ts';
import { browserSkip, launchBrowser, screenshotPath, type Browser } from '../helpers/browser.ts';

const built = consoleDirs().some((d) => existsSync(join(d, 'index.html')));
function suiteSkip(): false | string {
  const noBrowser = browserSkip();
  if (noBrowser) return noBrowser;
  if (built) return false;
  if (process.env.CI === 'true') throw new Error('CI=true and the console is not built (npm ci runs prepare: scripts/build.mjs)');
  console.log('# SKIP console browser tests: the console is not built (run npm run build)');
  return 'the console is not built';
}
const skip = suiteSkip();

interface Stored { request_id: string; status: string; result: string | null; usage: { completion_tokens: number } | null }

describe('web console in Chromium', { skip }, () => {
  let app: TestSluice;
  let browser: Browser;
  let admin: Page;
  const pageErrors: string[] = [];
  let userKey = '';

  /** A page of this browser whose console errors (CSP violations among them) and crashes are collected. */
  const newPage = async () => {
    const page = await browser.context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    return page;
  };
  const shot = (page: Page, name: string) => page.screenshot({ path: screenshotPath(name), fullPage: true });
  const signIn = async (page: Page, key: string) => {
    await page.goto(`${app.url}/console/`);
    const field = page.getByLabel('API key');
    await field.fill(key);
    await field.press('Enter');
    await page.getByRole('heading', { name: 'Playground' }).waitFor();
  };
  const stored = async (id: string) => (await (await api(app.url)(`/v1/requests/${id}`)).json()) as Stored;
  const tokenCount = async (page: Page) => Number(await page.getByTestId('token-count').textContent());

  before(async () => {
    // A model slow enough to watch: 40 ms between tokens.
    app = await startTestSluice({ sim: { ttftMs: 50, itlMs: 40 } });
    browser = await launchBrowser();
    admin = await newPage();
  });
  after(async () => {
    await browser?.close();
    await app?.stop();
  });

  it('signs in with the master key from the keyboard, keeps the key out of the URL, and shows the admin pages', async () => {
    await admin.goto(`${app.url}/console/`);
    await admin.getByRole('heading', { name: 'Sign in' }).waitFor();
    await admin.keyboard.press('Tab');
    assert.equal(await admin.evaluate(() => document.activeElement?.textContent), 'Skip to content', 'the first Tab reaches the skip link');
    await shot(admin, 'sign-in');
    // A wrong key is refused with the catalogue's message.
    await admin.getByLabel('API key').fill('sk-not-a-key-0123456789');
    await admin.getByRole('button', { name: 'Sign in' }).click();
    assert.match(await admin.getByRole('alert').textContent() ?? '', /SLUICE_ERR_INVALID_API_KEY/);
    await signIn(admin, MASTER_KEY);
    assert.ok(!admin.url().includes(MASTER_KEY));
    assert.equal(await admin.evaluate(() => sessionStorage.getItem('sluice.console.key')), MASTER_KEY);
    await admin.getByRole('link', { name: 'Admin' }).waitFor();
  });

  it('streams a prompt: tokens arrive while it runs, and the reply is the stored result', async () => {
    await admin.getByLabel('User message').fill('Tell me about rivers.');
    await admin.getByLabel('max_tokens').fill('40');
    await admin.getByRole('button', { name: 'Send' }).click();
    await admin.waitForFunction(() => Number(document.querySelector('[data-testid="token-count"]')?.textContent) >= 3);
    const midway = await tokenCount(admin);
    assert.ok(await admin.getByRole('button', { name: 'Cancel' }).isEnabled(), 'still running');
    await admin.getByTestId('resume-report').waitFor({ timeout: 30_000 });
    const id = (await admin.getByTestId('request-id').textContent())!;
    const record = await stored(id);
    assert.equal(record.status, 'completed');
    assert.ok(midway < 40, `tokens were shown as they came (${midway} of 40 at first look)`);
    assert.equal(await tokenCount(admin), 40);
    assert.equal(await admin.getByTestId('reply').textContent(), record.result);
    assert.match(await admin.getByTestId('resume-report').textContent() ?? '', /Not resumed: no gap, no duplicate \(seq 1–\d+\); the text matches the stored result \(40 tokens\)/);
    await shot(admin, 'playground-streamed');
  });

  it('drops the connection mid-stream and resumes from Last-Event-ID with no gap and no duplicate', async () => {
    await admin.getByLabel('max_tokens').fill('80');
    await admin.getByRole('button', { name: 'Send' }).click();
    await admin.waitForFunction(() => Number(document.querySelector('[data-testid="token-count"]')?.textContent) >= 10);
    await admin.getByRole('button', { name: 'Drop connection' }).click();
    const report = admin.getByTestId('resume-report');
    await report.waitFor({ timeout: 30_000 });
    const text = (await report.textContent())!;
    const m = /^Resumed at seq (\d+): no gap, no duplicate \(seq 1–(\d+)\); the text matches the stored result \(80 tokens\)\.$/.exec(text);
    assert.ok(m, text);
    assert.ok(Number(m[1]) >= 10 && Number(m[1]) < Number(m[2]), `dropped mid-stream: ${text}`);
    const log = (await admin.getByTestId('event-log').textContent())!;
    assert.match(log, new RegExp(`connection dropped after seq ${m[1]}`));
    assert.match(log, new RegExp(`resuming with Last-Event-ID: ${m[1]}`));
    const record = await stored((await admin.getByTestId('request-id').textContent())!);
    assert.equal(record.status, 'completed');
    assert.equal(await admin.getByTestId('reply').textContent(), record.result, 'what the page shows is exactly the stored result');
    assert.equal(await tokenCount(admin), 80);
    await shot(admin, 'playground-resumed');
  });

  it('plays the other delivery modes: async shows the status changes, direct streams, cancel ends a stream', async () => {
    await admin.getByLabel('max_tokens').fill('30');
    await admin.getByRole('radio', { name: /Async/ }).check();
    await admin.getByRole('button', { name: 'Send' }).click();
    const log = admin.getByTestId('event-log');
    await log.getByText(/status: completed/).waitFor({ timeout: 30_000 });
    assert.match((await log.textContent())!, /accepted \S+: queued/);
    let record = await stored((await admin.getByTestId('request-id').textContent())!);
    assert.equal(await admin.getByTestId('reply').textContent(), record.result);

    await admin.getByRole('radio', { name: /Direct stream/ }).check();
    assert.equal(await admin.getByRole('button', { name: 'Drop connection' }).isDisabled(), true);
    await admin.getByRole('button', { name: 'Send' }).click();
    await log.getByText('finish reason: length').waitFor({ timeout: 30_000 });
    record = await stored((await admin.getByTestId('request-id').textContent())!);
    assert.equal(record.status, 'completed');
    assert.equal(await admin.getByTestId('reply').textContent(), record.result);
    assert.equal(await tokenCount(admin), 30);

    await admin.getByRole('radio', { name: /Stream \(resumable/ }).check();
    await admin.getByLabel('max_tokens').fill('200');
    await admin.getByRole('button', { name: 'Send' }).click();
    await admin.waitForFunction(() => Number(document.querySelector('[data-testid="token-count"]')?.textContent) >= 5);
    await admin.getByRole('button', { name: 'Cancel' }).click();
    await admin.getByTestId('resume-report').waitFor({ timeout: 30_000 });
    assert.match((await admin.getByRole('alert').textContent())!, /SLUICE_ERR_CANCELLED/);
    record = await stored((await admin.getByTestId('request-id').textContent())!);
    assert.equal(record.status, 'cancelled');
    assert.ok((record.usage?.completion_tokens ?? 0) < 200, 'cut short');
    await shot(admin, 'playground-cancelled');
  });

  it('admin: creates a user and a key, shown once', async () => {
    await admin.getByRole('link', { name: 'Admin' }).click();
    await admin.getByRole('heading', { name: 'Admin', level: 1 }).waitFor();
    const create = admin.getByRole('form', { name: 'Create a user' });
    await create.getByLabel('User id').fill('console-user');
    await create.getByLabel('Name').fill('Console User');
    await create.getByLabel('Tier').selectOption('free');
    await create.getByRole('button', { name: 'Create user' }).click();
    await admin.getByTestId('users-table').locator('tr', { hasText: 'console-user' }).waitFor();
    const keyForm = admin.getByRole('form', { name: 'Create an API key' });
    await keyForm.getByLabel('User').selectOption('console-user');
    await keyForm.getByLabel('Key name').fill('from the console');
    await keyForm.getByRole('button', { name: 'Create key' }).click();
    userKey = await admin.getByTestId('created-key').inputValue();
    assert.match(userKey, /^sk-sluice-/);
    await admin.getByTestId('keys-table').locator('tr', { hasText: 'from the console' }).waitFor();
    const users = (await (await api(app.url)('/admin/users/console-user')).json()) as { tier: string; name: string };
    assert.deepEqual([users.tier, users.name], ['free', 'Console User']);
    await shot(admin, 'admin');
  });

  it('admin: changes a user\'s tier, overrides a quota beside the tier\'s limit, and deactivates after confirming', async () => {
    const create = admin.getByRole('form', { name: 'Create a user' });
    await create.getByLabel('User id').fill('console-other');
    await create.getByRole('button', { name: 'Create user' }).click();
    const row = admin.getByTestId('users-table').locator('tr', { hasText: 'console-other' });
    await row.waitFor();
    await row.getByLabel('Tier of console-other').selectOption('pro');
    await admin.getByRole('status').filter({ hasText: 'console-other is now on tier pro' }).waitFor();
    const user = async () => (await (await api(app.url)('/admin/users/console-other')).json()) as { tier: string; active: boolean };
    assert.equal((await user()).tier, 'pro');

    await admin.getByLabel('User', { exact: true }).last().selectOption('console-other');
    const quotas = admin.locator('#admin-quotas');
    await quotas.getByText('Limits of console-other (tier pro)').waitFor();
    await quotas.getByLabel('Override tokens_per_day').fill('1234');
    await quotas.getByRole('button', { name: 'Save override' }).click();
    await quotas.getByText('Saved the override of console-other').waitFor();
    const cells = await quotas.locator('tr', { hasText: 'tokens_per_day' }).locator('td').allTextContents();
    assert.deepEqual([cells[0], cells[2]], ['5,000,000', '1,234'], 'the tier\'s limit beside the effective one');
    const q = (await (await api(app.url)('/admin/quotas/console-other')).json()) as { effective: { tokensPerDay: number } };
    assert.equal(q.effective.tokensPerDay, 1234);

    let asked = '';
    admin.once('dialog', (d) => { asked = d.message(); void d.dismiss(); });
    await row.getByRole('button', { name: 'Deactivate' }).click();
    assert.match(asked, /Deactivate console-other/);
    assert.equal((await user()).active, true, 'dismissed: nothing changed');
    admin.once('dialog', (d) => { void d.accept(); });
    await row.getByRole('button', { name: 'Deactivate' }).click();
    await row.getByRole('button', { name: 'Activate' }).waitFor();
    assert.equal((await user()).active, false);
  });

  it('the new key streams a reply and its usage page shows that request, with its record and event log', async () => {
    const user = await newPage();
    await signIn(user, userKey);
    assert.equal(await user.getByRole('link', { name: 'Admin' }).count(), 0, 'no admin pages for a user key');
    await user.getByLabel('max_tokens').fill('12');
    await user.getByRole('button', { name: 'Send' }).click();
    await user.getByTestId('resume-report').waitFor({ timeout: 30_000 });
    const id = (await user.getByTestId('request-id').textContent())!;
    await user.getByRole('link', { name: 'My usage', exact: true }).click();
    await user.getByTestId('usage-user').waitFor();
    assert.equal(await user.getByTestId('usage-user').textContent(), 'console-user');
    const row = user.getByTestId('requests-table').locator('tr', { hasText: id });
    await row.waitFor();
    assert.match((await row.textContent())!, /completed/);
    assert.match((await user.getByTestId('window-daily-requests').textContent())!, /1 \/ /);
    await user.locator('.chart canvas').first().waitFor();
    await shot(user, 'usage');
    await row.getByRole('link', { name: id }).click();
    const eventRows = (type: string) => user.getByTestId('event-table').locator('tbody tr').filter({ has: user.locator('td:nth-child(2)', { hasText: new RegExp(`^${type}$`) }) });
    await eventRows('completed').waitFor();
    assert.equal(await eventRows('token').count(), 12);
    await shot(user, 'request');

    // Narrow screen: one column, nothing wider than the viewport.
    await user.setViewportSize({ width: 390, height: 844 });
    await user.getByRole('link', { name: 'My usage', exact: true }).click();
    await user.getByTestId('usage-user').waitFor();
    const overflow = await user.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page wider than a phone by ${overflow}px`);
    await shot(user, 'usage-narrow');
    await user.close();
  });

  it('a revoked key is refused: the admin revokes it (after confirming), and signing in with it fails', async () => {
    let asked = '';
    admin.once('dialog', (d) => { asked = d.message(); void d.accept(); });
    await admin.getByTestId('keys-table').locator('tr', { hasText: 'from the console' }).getByRole('button', { name: /^Revoke key/ }).click();
    await admin.getByRole('status').filter({ hasText: /^Revoked key_/ }).waitFor();
    assert.match(asked, /cannot be undone/);
    const user = await newPage();
    await user.goto(`${app.url}/console/`);
    await user.getByLabel('API key').fill(userKey);
    await user.getByRole('button', { name: 'Sign in' }).click();
    assert.match(await user.getByRole('alert').textContent() ?? '', /revoked.*SLUICE_ERR_REVOKED_API_KEY/);
    await shot(user, 'revoked');
    await user.close();
  });

  it('admin: filters recent requests by user and status, and downloads the usage CSV', async () => {
    await admin.getByRole('link', { name: 'Admin' }).click();
    const filter = admin.getByRole('form', { name: 'Filter requests' });
    await filter.getByLabel('User id').fill('console-user');
    await filter.getByLabel('Status').selectOption('completed');
    await filter.getByRole('button', { name: 'Filter' }).click();
    const table = admin.locator('#admin-requests').getByTestId('requests-table');
    await admin.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#admin-requests tbody tr')];
      return rows.length === 1 && rows[0]!.textContent!.includes('console-user');
    });
    assert.match((await table.locator('tbody tr').textContent())!, /console-user.*sim.*completed/);
    const [download] = await Promise.all([admin.waitForEvent('download'), admin.getByRole('button', { name: 'Download CSV' }).click()]);
    const path = await download.path();
    const csv = readFileSync(path, 'utf8').trim().split('\n');
    assert.match(csv[0]!, /^request_id,user_id,key_id,model,status/);
    assert.ok(csv.some((line) => line.includes(',console-user,')), csv.join('\n'));
    await admin.getByRole('status').filter({ hasText: /^Downloaded usage-/ }).waitFor();
  });

  it('live: the dashboard reads the gateway\'s metrics', async () => {
    await admin.getByRole('link', { name: 'Live' }).click();
    await admin.getByLabel('Refresh every').selectOption('2');
    await admin.waitForFunction(() => document.querySelector('[data-testid="queue-depth"]')?.textContent !== '—');
    await admin.locator('.chart canvas').first().waitFor({ timeout: 15_000 });
    // Traffic while it watches: the rates between two scrapes go above zero.
    const call = api(app.url);
    const traffic = (async () => {
      for (let i = 0; i < 6; i++) {
        const res = await call('/v1/chat/completions', { method: 'POST', json: { model: 'sim', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 } });
        assert.equal(res.status, 200);
        await new Promise((r) => setTimeout(r, 300));
      }
    })();
    await admin.waitForFunction(() => Number(document.querySelector('[data-testid="requests-per-second"]')?.textContent) > 0, undefined, { timeout: 20_000 });
    await admin.waitForFunction(() => Number(document.querySelector('[data-testid="tokens-per-second"]')?.textContent) > 0, undefined, { timeout: 20_000 });
    await traffic;
    await shot(admin, 'live');
  });

  it('met no script error and no Content-Security-Policy violation on any page', () => {
    // The refusals the tests provoke (a wrong key: 401; a user key asked for the admin pages: 403) are logged by the browser.
    assert.deepEqual(pageErrors.filter((e) => !/^Failed to load resource: the server responded with a status of 40[13] /.test(e)), []);
  });
});

// A real Chromium for the console's browser tests: Debian's `chromium` package driven by
// playwright-core (no browser download). Missing: the tests skip with a visible message, except
// under CI=true, where .ci/run installs it and its absence is a failure.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env.SLUICE_CHROMIUM ?? '/usr/bin/chromium';

/** Where the browser tests save their screenshots (CI keeps this directory as artifacts). */
export const SCREENSHOT_DIR = resolve(process.env.SLUICE_SCREENSHOT_DIR ?? join('test-artifacts', 'console'));

/** false when Chromium is there; else why the suite skips (under CI=true: never, the suite fails instead). */
export function browserSkip(): false | string {
  if (existsSync(CHROMIUM)) return false;
  const why = `no Chromium at ${CHROMIUM} (apt-get install chromium, or set SLUICE_CHROMIUM)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${why}: .ci/run installs it`);
  console.log(`# SKIP console browser tests: ${why}`);
  return why;
}

export interface Browser { context: BrowserContext; close(): Promise<void> }

/** A fresh headless Chromium with its own profile directory, removed on close. */
export async function launchBrowser(opts: { width?: number; height?: number } = {}): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'sluice-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: opts.width ?? 1280, height: opts.height ?? 900 },
    timeout: 60_000,
  });
  return {
    context,
    close: async () => { await context.close().catch(() => {}); rmSync(profile, { recursive: true, force: true }); },
  };
}

export function screenshotPath(name: string): string {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  return join(SCREENSHOT_DIR, `${name}.png`);
}

// Debian's headless chromium for the tests that open a page: where it is,
// whether it is there, and how it is started. npm test passes with Node
// alone: without a browser these checks are skipped, saying so; CI installs
// Debian's chromium and runs them.
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Whether the browser is missing; if so, says which checks are skipped. */
export function browserMissing(checks: string): boolean {
  const missing = !existsSync(CHROMIUM);
  if (missing) console.warn(`skipped: the ${checks} need a browser at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  return missing;
}

/** The browser, headless, with nothing running in the background. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

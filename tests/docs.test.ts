// The published docs, opened in a real headless browser (Debian's chromium).
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { listen, testApp, testPool } from './support.js';
import { browserMissing as isBrowserMissing, launchBrowser } from './harness/browser.js';

const browserMissing = isBrowserMissing('docs checks');
const pool = testPool(2);
const app = await testApp(pool);
let server: Awaited<ReturnType<typeof listen>>;
let browser: Browser;

beforeAll(async () => {
  if (browserMissing) return;
  server = await listen(app);
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await server?.close();
});

it.skipIf(browserMissing)('renders every operation of the contract at /docs', async () => {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`http://127.0.0.1:${server.port}/docs`);
  await expect.poll(() => page.title()).toContain('Ticket Booking API');
  const operations: Record<string, string[]> = {
    Shows: ['List shows', 'Create a show or trip', 'Get a show'],
    Seats: ['Get the seat map of a show', "Stream or list a show's seat events"],
    Bookings: ['Book seats', 'Get a booking', 'Confirm a held booking', 'Cancel a booking'],
    Operations: ['Check that the process is alive', 'Check that the service can take traffic', "Read the service's metrics"],
  };
  // The interactive bundle ran: each tag opens to list its operations.
  for (const [tag, summaries] of Object.entries(operations)) {
    await page.getByText(tag, { exact: true }).first().click();
    for (const summary of summaries) {
      await page.getByText(summary, { exact: true }).first().waitFor({ timeout: 10_000 });
    }
  }
  await page.getByText('Book seats', { exact: true }).first().dispatchEvent('click');
  await page.getByRole('heading', { name: 'Book seats' }).first().waitFor({ timeout: 10_000 });
  expect(await page.getByText('/api/bookings').count()).toBeGreaterThan(0);
  expect(errors).toEqual([]);
  await page.close();
});

// The seat map page (/seat-map/), opened in a real headless browser
// (Debian's chromium): it follows bookings made elsewhere through the API,
// seats and standing areas, and books what a visitor picks.
import type { Browser, Page } from 'playwright-core';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPage } from '../src/web/build.js';
import { admin, customer, listen, owner, postJson, testApp, testPool, theatre, type CreatedBooking, type NewShow, type SeatMap, type ShowDetail } from './support.js';
import { browserMissing as isBrowserMissing, launchBrowser } from './harness/browser.js';

const browserMissing = isBrowserMissing('seat map page checks');
const pool = testPool(4);
const app = await testApp(pool);
let server: Awaited<ReturnType<typeof listen>>;
let browser: Browser;

beforeAll(async () => {
  // The page as the sources make it now, not as an earlier build left it.
  await buildPage();
  if (browserMissing) return;
  server = await listen(app);
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await server?.close();
});

async function createShow(show: NewShow = theatre()): Promise<ShowDetail> {
  return (await request(app).post('/api/shows').set(admin).send(show).expect(201)).body;
}

/** The theatre with a standing area of 8 beside its seats. */
function standing(): NewShow {
  return theatre({
    categories: [
      { code: 'standard', price: 2500 },
      { code: 'premium', price: 5000 },
      { code: 'standing', price: 2000 },
    ],
    areas: [{ name: 'Floor', category: 'standing', capacity: 8 }],
  });
}

async function book(showId: string, seatLabels: string[], extra: object = {}): Promise<CreatedBooking> {
  const { status, body } = await postJson<CreatedBooking>(server.port, '/api/bookings', { showId, seatLabels, customer: customer(), ...extra });
  expect(status).toBe(201);
  return body;
}

async function statuses(showId: string): Promise<Record<string, string>> {
  const map: SeatMap = (await request(app).get(`/api/shows/${showId}/seats`).expect(200)).body;
  return Object.fromEntries(map.seats.map((seat) => [seat.label, seat.status]));
}

/** The page of a show, live (its stream open and its map drawn), and what went wrong in it. */
async function open(path: string): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(error.message));
  // A blocked load or request is reported on the console, not as a page error.
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(message.text())) problems.push(message.text());
  });
  await page.goto(`http://127.0.0.1:${server.port}${path}`);
  return { page, problems };
}

async function waitLive(page: Page): Promise<void> {
  await page.getByRole('status').filter({ hasText: 'Live' }).waitFor({ timeout: 20_000 });
  await page.locator('button.seat').first().waitFor({ timeout: 20_000 });
}

const seat = (page: Page, label: string) => page.locator(`button.seat[data-label="${label}"]`);
const colour = (page: Page, label: string) => seat(page, label).evaluate((button) => button.ownerDocument.defaultView?.getComputedStyle(button).backgroundColor);

describe('the seat map page', () => {
  it('is served with its script and styles under a policy that loads nothing from elsewhere', async () => {
    await request(app).get('/seat-map').expect(301).expect('Location', '/seat-map/');
    const page = await request(app).get('/seat-map/').expect(200).expect('Content-Type', /text\/html/);
    const policy = String(page.headers['content-security-policy']);
    expect(policy).toContain("default-src 'none'");
    expect(policy).toContain("script-src 'self'");
    expect(policy).toContain("connect-src 'self'");
    expect(policy).not.toContain('unsafe-inline');
    expect(page.text).toContain('src="seat-map.js"');
    await request(app).get('/seat-map/seat-map.js').expect(200).expect('Content-Type', /javascript/);
    await request(app).get('/seat-map/seat-map.css').expect(200).expect('Content-Type', /text\/css/);
    // The API keeps its own headers.
    const api = await request(app).get('/health').expect(200);
    expect(String(api.headers['content-security-policy'])).not.toContain("default-src 'none'");
  });

  it.skipIf(browserMissing)('draws every seat of the show with its status in colour and in words', async () => {
    const show = await createShow();
    await book(show.id, ['Stalls-B-6']);
    const { page, problems } = await open(`/seat-map/?show=${show.id}`);
    await waitLive(page);
    expect(await page.locator('h1').textContent()).toBe(`${show.name}, The Globe`);
    expect(await page.locator('button.seat').count()).toBe(10);
    expect(await page.getByRole('group', { name: 'Stalls, row A' }).locator('button').count()).toBe(4);
    const free = seat(page, 'Stalls-A-1');
    expect(await free.getAttribute('data-status')).toBe('available');
    expect(await free.getAttribute('aria-label')).toMatch(/^Seat Stalls-A-1, premium, .*50.*: available$/);
    const taken = seat(page, 'Stalls-B-6');
    expect(await taken.getAttribute('data-status')).toBe('booked');
    expect(await taken.isDisabled()).toBe(true);
    expect(await taken.textContent()).toContain('✕');
    expect(await colour(page, 'Stalls-B-6')).not.toBe(await colour(page, 'Stalls-A-1'));
    expect(await page.locator('#summary').textContent()).toBe('9 of 10 seats available, 0 held, 1 booked.');
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(browserMissing)('shows a seat booked, held and freed through the API change live, without a reload', async () => {
    const show = await createShow();
    const { page, problems } = await open(`/seat-map/?show=${show.id}`);
    await waitLive(page);
    const before = await colour(page, 'Stalls-A-1');
    expect(before).toMatch(/^rgb/);
    expect(await seat(page, 'Stalls-A-1').getAttribute('data-status')).toBe('available');

    await book(show.id, ['Stalls-A-1']);
    await expect.poll(() => seat(page, 'Stalls-A-1').getAttribute('data-status'), { timeout: 20_000 }).toBe('booked');
    expect(await colour(page, 'Stalls-A-1')).not.toBe(before);
    expect(await seat(page, 'Stalls-A-1').getAttribute('aria-label')).toMatch(/: booked$/);
    expect(await seat(page, 'Stalls-A-1').isDisabled()).toBe(true);

    const hold = await book(show.id, ['Stalls-A-3'], { hold: true });
    await expect.poll(() => seat(page, 'Stalls-A-3').getAttribute('data-status'), { timeout: 20_000 }).toBe('held');
    const heldColour = await colour(page, 'Stalls-A-3');
    expect(heldColour).not.toBe(before);
    expect(heldColour).not.toBe(await colour(page, 'Stalls-A-1'));
    await request(app).post(`/api/bookings/${hold.id}/cancel`).set(owner(hold)).send({}).expect(200);
    await expect.poll(() => seat(page, 'Stalls-A-3').getAttribute('data-status'), { timeout: 20_000 }).toBe('available');
    expect(await colour(page, 'Stalls-A-3')).toBe(before);
    expect(await page.locator('#summary').textContent()).toBe('9 of 10 seats available, 0 held, 1 booked.');
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(browserMissing)('books the seats a visitor clicks, and the API shows them taken', async () => {
    const show = await createShow();
    const { page, problems } = await open(`/seat-map/?show=${show.id}`);
    await waitLive(page);
    await seat(page, 'Stalls-B-2').click();
    await seat(page, 'Stalls-B-3').click();
    expect(await seat(page, 'Stalls-B-2').getAttribute('aria-pressed')).toBe('true');
    expect(await page.locator('#selection').textContent()).toMatch(/^Selected: Stalls-B-2, Stalls-B-3 \(2 seats, .*50.*\)\.$/);
    const email = customer().email;
    await page.getByLabel('Name').fill('Grace Hopper');
    await page.getByLabel('Email').fill(email);
    await page.getByRole('button', { name: 'Book 2 seats' }).click();

    await page.getByText('Booked Stalls-B-2, Stalls-B-3').waitFor({ timeout: 20_000 });
    const taken = await statuses(show.id);
    expect(taken['Stalls-B-2']).toBe('booked');
    expect(taken['Stalls-B-3']).toBe('booked');
    expect(Object.values(taken).filter((status) => status !== 'available')).toHaveLength(2);
    // The secret the page shows once is the booking's own.
    const secret = String(await page.locator('#result code').textContent());
    const booking = await request(app).get(`/api/bookings/${/booking ([0-9a-f-]{36})/.exec(String(await page.locator('#result').textContent()))?.[1]}`).set(owner({ secret })).expect(200);
    expect(booking.body).toMatchObject({ status: 'confirmed', customer: { name: 'Grace Hopper', email } });
    expect(await seat(page, 'Stalls-B-2').getAttribute('data-status')).toBe('booked');
    expect(await page.locator('#selection').textContent()).toBe('No seat selected.');
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(browserMissing)('drops a picked seat from the selection when someone else books it first', async () => {
    const show = await createShow();
    const { page, problems } = await open(`/seat-map/?show=${show.id}`);
    await waitLive(page);
    await seat(page, 'Stalls-A-2').click();
    expect(await page.getByRole('button', { name: 'Book 1 seat' }).isEnabled()).toBe(true);
    await book(show.id, ['Stalls-A-2']);
    await expect.poll(() => seat(page, 'Stalls-A-2').getAttribute('data-status'), { timeout: 20_000 }).toBe('booked');
    expect(await seat(page, 'Stalls-A-2').getAttribute('aria-pressed')).toBe('false');
    expect(await page.locator('#selection').textContent()).toBe('No seat selected.');
    expect(await page.locator('#book button[type="submit"]').isDisabled()).toBe(true);
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(browserMissing)('shows each standing area with its places left, changing live as the API books them', async () => {
    const show = await createShow(standing());
    const { page, problems } = await open(`/seat-map/?show=${show.id}`);
    await waitLive(page);
    const floor = page.locator('.area[data-area="Floor"]');
    expect(await floor.getByRole('heading').textContent()).toBe('Floor');
    expect(await floor.locator('p').textContent()).toMatch(/^standing, .*20.* a place: 8 of 8 places left \(0 held, 0 booked\)\.$/);
    const bar = page.getByRole('meter', { name: 'Floor' });
    expect([await bar.getAttribute('value'), await bar.getAttribute('max')]).toEqual(['8', '8']);

    await book(show.id, ['Stalls-A-1'], { areas: [{ name: 'Floor', quantity: 3 }] });
    await expect.poll(() => floor.locator('p').textContent(), { timeout: 20_000 }).toMatch(/: 5 of 8 places left \(0 held, 3 booked\)\.$/);
    expect(await bar.getAttribute('value')).toBe('5');
    await expect.poll(() => seat(page, 'Stalls-A-1').getAttribute('data-status'), { timeout: 20_000 }).toBe('booked');
    const hold = await postJson<CreatedBooking>(server.port, '/api/bookings', { showId: show.id, areas: [{ name: 'Floor', quantity: 5 }], hold: true, customer: customer() });
    expect(hold.status).toBe(201);
    await expect.poll(() => floor.locator('p').textContent(), { timeout: 20_000 }).toMatch(/: 0 of 8 places left \(5 held, 3 booked\)\.$/);
    expect(await page.getByLabel('Places in Floor').isDisabled()).toBe(true);
    await request(app).post(`/api/bookings/${hold.body.id}/cancel`).set(owner(hold.body)).send({}).expect(200);
    await expect.poll(() => floor.locator('p').textContent(), { timeout: 20_000 }).toMatch(/: 5 of 8 places left \(0 held, 3 booked\)\.$/);
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(browserMissing)('books a seat and two standing places in one order from the page, and the API shows them', async () => {
    const show = await createShow(standing());
    const { page, problems } = await open(`/seat-map/?show=${show.id}`);
    await waitLive(page);
    await page.locator('.area[data-area="Floor"] p').waitFor({ timeout: 20_000 });
    await seat(page, 'Stalls-B-1').click();
    await page.getByLabel('Places in Floor').fill('2');
    expect(await page.locator('#selection').textContent()).toMatch(/^Selected: Stalls-B-1, 2 places in Floor \(1 seat and 2 places, .*65.*\)\.$/);
    await page.getByLabel('Name').fill('Grace Hopper');
    await page.getByLabel('Email').fill(customer().email);
    await page.getByRole('button', { name: 'Book 1 seat and 2 places' }).click();

    await page.getByText('Booked Stalls-B-1, 2 places in Floor').waitFor({ timeout: 20_000 });
    const secret = String(await page.locator('#result code').textContent());
    const id = /booking ([0-9a-f-]{36})/.exec(String(await page.locator('#result').textContent()))?.[1];
    const booking = await request(app).get(`/api/bookings/${id}`).set(owner({ secret })).expect(200);
    expect(booking.body).toMatchObject({
      status: 'confirmed',
      seats: [{ label: 'Stalls-B-1' }],
      areas: [{ name: 'Floor', category: 'standing', quantity: 2, price: 4000 }],
      totalPrice: 6500,
    });
    const map: SeatMap = (await request(app).get(`/api/shows/${show.id}/seats`).expect(200)).body;
    expect(map.areas).toEqual([expect.objectContaining({ name: 'Floor', available: 6, booked: 2 })]);
    await expect.poll(() => page.locator('.area[data-area="Floor"] p').textContent(), { timeout: 20_000 }).toMatch(/: 6 of 8 places left/);
    expect(await page.getByLabel('Places in Floor').inputValue()).toBe('0');
    expect(await page.locator('#selection').textContent()).toBe('No seat selected.');
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(browserMissing)("shows a trip's seats between the chosen stops, changing only for bookings that overlap them", async () => {
    const { startsAt: _startsAt, ...base } = theatre({
      kind: 'trip',
      venue: 'Coach station',
      categories: [{ code: 'standard', price: 500 }],
      sections: [{ name: 'Deck', rows: [{ label: '1', seats: 4, category: 'standard' }] }],
    });
    const trip = await createShow({
      ...base,
      stops: [
        { name: 'A', departsAt: '2099-05-01T08:00:00Z' },
        { name: 'B', departsAt: '2099-05-01T09:00:00Z' },
        { name: 'C', departsAt: '2099-05-01T10:00:00Z' },
      ],
    });
    const { page, problems } = await open(`/seat-map/?show=${trip.id}&from=A&to=B`);
    await waitLive(page);
    expect(await page.getByLabel('From').inputValue()).toBe('A');
    expect(await page.getByLabel('To').inputValue()).toBe('B');
    await book(trip.id, ['Deck-1-1'], { fromStop: 'B', toStop: 'C' });
    await book(trip.id, ['Deck-1-2'], { fromStop: 'A', toStop: 'B' });
    // The second booking's event is seen after the first's, and the map read
    // for it knows both: only the overlapping one is taken from A to B.
    await expect.poll(() => seat(page, 'Deck-1-2').getAttribute('data-status'), { timeout: 20_000 }).toBe('booked');
    expect(await seat(page, 'Deck-1-1').getAttribute('data-status')).toBe('available');

    await seat(page, 'Deck-1-1').click();
    await page.getByLabel('Name').fill('Ada Lovelace');
    await page.getByLabel('Email').fill(customer().email);
    await page.getByRole('button', { name: 'Book 1 seat' }).click();
    await page.getByText('Booked Deck-1-1').waitFor({ timeout: 20_000 });
    const fromAtoB: SeatMap = (await request(app).get(`/api/shows/${trip.id}/seats`).query({ from: 'A', to: 'B' }).expect(200)).body;
    expect(fromAtoB.seats.find((s) => s.label === 'Deck-1-1')?.status).toBe('booked');
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(browserMissing)('lists shows on sale, each linking to its map, when no show is named', async () => {
    await createShow();
    const { page, problems } = await open('/seat-map/');
    await page.getByRole('navigation', { name: 'Shows on sale' }).getByRole('link').first().waitFor({ timeout: 20_000 });
    expect(await page.locator('h1').textContent()).toBe('Seat maps');
    const links = await page.locator('#show-list a').evaluateAll((anchors) => anchors.map((a) => a.getAttribute('href')));
    expect(links.length).toBeGreaterThan(0);
    for (const href of links) expect(href).toMatch(/^\?show=[0-9a-f-]{36}$/);
    expect(problems).toEqual([]);
    await page.close();
  });

  it.skipIf(browserMissing)("says so when the show does not exist, in the API's words", async () => {
    const { page, problems } = await open('/seat-map/?show=7b1e3c9a-0000-4000-8000-000000000001');
    await page.locator('#result .error').waitFor({ timeout: 20_000 });
    expect(await page.locator('#result').textContent()).toMatch(/7b1e3c9a-0000-4000-8000-000000000001|no such show/i);
    expect(await page.locator('button.seat').count()).toBe(0);
    expect(problems).toEqual([]);
    await page.close();
  });
});

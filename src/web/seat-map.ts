// The seat map page: draws a show's seats and standing areas from the public
// API, follows the show's public event stream so seats and places left change
// as others book, and books the seats and places a visitor picks, all through
// the typed client. /seat-map/?show=<id>,
// with &from=<stop>&to=<stop> for part of a trip.
import { createBookingClient, type components } from '../client.js';

type Seat = components['schemas']['Seat'];
type SeatStatus = components['schemas']['SeatStatus'];
type SeatEvent = components['schemas']['SeatEvent'];
type SeatEventType = components['schemas']['SeatEventType'];
type AreaRoom = components['schemas']['AreaRoom'];
type ShowDetail = components['schemas']['ShowDetail'];
type NewBooking = components['schemas']['NewBooking'];

const api = createBookingClient(location.origin);
const params = new URLSearchParams(location.search);

function byId<T extends HTMLElement>(id: string, type: { new (): T }): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`the page has no #${id}`);
  return found;
}

const title = byId('title', HTMLHeadingElement);
const summary = byId('summary', HTMLParagraphElement);
const live = byId('live', HTMLParagraphElement);
const map = byId('map', HTMLDivElement);
const bookForm = byId('book', HTMLFormElement);
const selection = byId('selection', HTMLParagraphElement);
const result = byId('result', HTMLDivElement);
const areaPart = byId('areas', HTMLElement);
const areaList = byId('area-list', HTMLDivElement);
const legend = document.querySelector<HTMLUListElement>('.legend');
const bookButton = bookForm.querySelector<HTMLButtonElement>('button[type="submit"]');

// Colour is never the only sign: each status has a mark and a word.
const marks: Record<SeatStatus, string> = { available: '', held: ' …', booked: ' ✕', blocked: ' —' };
const words: Record<SeatStatus, string> = { available: 'available', held: 'held', booked: 'booked', blocked: 'not for sale' };
// What a public event means for its seats.
const statusAfter: Record<SeatEventType, SeatStatus> = {
  held: 'held',
  booked: 'booked',
  released: 'available',
  cancelled: 'available',
  expired: 'available',
  // Only in the admin's history, never in this public feed: the seat stays booked.
  admitted: 'booked',
};

const seats = new Map<number, Seat>();
const buttons = new Map<number, HTMLButtonElement>();
const selected = new Set<number>();
// Each standing area's room as the map last said, its part of the page, and
// how many places of it the visitor wants.
const areas = new Map<string, { room: AreaRoom; words: HTMLParagraphElement; bar: HTMLMeterElement; wanted: HTMLInputElement }>();
let show: ShowDetail | undefined;
let price: (minor: number) => string = String;
const legs: { fromStop?: string; toStop?: string } = {};

/** Shows what went wrong, in the words of the API's problem when there is one. */
function report(message: string, error = true): void {
  const line = document.createElement('p');
  line.textContent = message;
  if (error) line.className = 'error';
  result.replaceChildren(line);
}

function problemText(problem: unknown, fallback: string): string {
  if (problem && typeof problem === 'object') {
    const { detail, title: heading } = problem as { detail?: unknown; title?: unknown };
    if (typeof detail === 'string') return detail;
    if (typeof heading === 'string') return heading;
  }
  return fallback;
}

function paint(seat: Seat): void {
  const button = buttons.get(seat.id);
  if (!button) return;
  const chosen = selected.has(seat.id);
  const state = chosen ? 'selected' : words[seat.status];
  button.dataset.status = seat.status;
  button.disabled = seat.status !== 'available';
  button.setAttribute('aria-pressed', String(chosen));
  button.textContent = `${seat.number}${chosen ? ' ✓' : marks[seat.status]}`;
  const name = `Seat ${seat.label}, ${seat.category}, ${price(seat.price)}: ${state}`;
  button.setAttribute('aria-label', name);
  button.title = name;
}

const count = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** The places of each area the visitor asks for, never more than are left. */
function wantedAreas(): { name: string; quantity: number; price: number }[] {
  return [...areas.values()]
    .map(({ room, wanted }) => ({ name: room.name, quantity: Math.min(Math.max(Math.trunc(wanted.valueAsNumber) || 0, 0), room.available), price: room.price }))
    .filter((area) => area.quantity > 0);
}

function describeSelection(): void {
  const chosen = [...selected].map((id) => seats.get(id)).filter((seat): seat is Seat => seat !== undefined);
  const places = wantedAreas();
  const placeCount = places.reduce((sum, area) => sum + area.quantity, 0);
  const total = chosen.reduce((sum, seat) => sum + seat.price, 0) + places.reduce((sum, area) => sum + area.quantity * area.price, 0);
  const what = [
    ...chosen.map((seat) => seat.label),
    ...places.map((area) => `${count(area.quantity, 'place', 'places')} in ${area.name}`),
  ];
  const counted = [chosen.length ? count(chosen.length, 'seat', 'seats') : '', placeCount ? count(placeCount, 'place', 'places') : ''].filter(Boolean).join(' and ');
  selection.textContent = what.length ? `Selected: ${what.join(', ')} (${counted}, ${price(total)}).` : 'No seat selected.';
  if (bookButton) {
    bookButton.disabled = what.length === 0;
    bookButton.textContent = what.length ? `Book ${counted}` : 'Book';
  }
  const counts = { available: 0, held: 0, booked: 0, blocked: 0 };
  for (const seat of seats.values()) counts[seat.status] += 1;
  summary.textContent = seats.size || !areas.size
    ? `${counts.available} of ${seats.size} seats available, ${counts.held} held, ${counts.booked} booked.`
    : 'Standing only: no seats.';
}

function setStatus(id: number, status: SeatStatus): void {
  const seat = seats.get(id);
  if (!seat || seat.status === status) return;
  seat.status = status;
  if (status !== 'available') selected.delete(id);
  paint(seat);
}

function toggle(id: number): void {
  const seat = seats.get(id);
  if (!seat || seat.status !== 'available') return;
  if (selected.has(id)) selected.delete(id);
  else selected.add(id);
  paint(seat);
  describeSelection();
}

/** An area's places left, in words and as a bar, and how many the visitor may still ask for. */
function paintArea(room: AreaRoom): void {
  const area = areas.get(room.name);
  if (!area) return;
  area.room = room;
  area.words.textContent = `${room.category}, ${price(room.price)} a place: ${room.available} of ${room.capacity} places left (${room.held} held, ${room.booked} booked).`;
  area.bar.max = room.capacity;
  area.bar.value = room.available;
  area.bar.textContent = `${room.available} of ${room.capacity}`;
  const most = Math.min(room.available, 100);
  area.wanted.max = String(most);
  area.wanted.disabled = most === 0;
  // Fewer left than were wanted: ask for what is left.
  if (area.wanted.valueAsNumber > most) area.wanted.value = String(most);
}

/** Each standing area: its name, category, price and places left, and a quantity to add to the order. */
function drawAreas(list: AreaRoom[]): void {
  areaList.replaceChildren(
    ...list.map((room, index) => {
      const part = document.createElement('section');
      part.className = 'area';
      part.dataset.area = room.name;
      const heading = document.createElement('h3');
      heading.id = `area-${index}`;
      heading.textContent = room.name;
      const words = document.createElement('p');
      words.id = `area-${index}-room`;
      const bar = document.createElement('meter');
      bar.min = 0;
      bar.setAttribute('aria-labelledby', heading.id);
      bar.setAttribute('aria-describedby', words.id);
      const label = document.createElement('label');
      const wanted = document.createElement('input');
      wanted.type = 'number';
      wanted.name = 'area';
      wanted.min = '0';
      wanted.step = '1';
      wanted.value = '0';
      wanted.inputMode = 'numeric';
      wanted.addEventListener('input', describeSelection);
      label.append(`Places in ${room.name}`, wanted);
      part.append(heading, words, bar, label);
      areas.set(room.name, { room, words, bar, wanted });
      return part;
    }),
  );
  areaPart.hidden = list.length === 0;
}

/** Sections, rows and seats, in the order of the show's layout. */
function draw(detail: ShowDetail, list: Seat[]): void {
  const rows = new Map<string, Seat[]>();
  for (const seat of list) {
    const key = `${seat.section}\u0000${seat.row}`;
    rows.set(key, [...(rows.get(key) ?? []), seat]);
  }
  const parts = detail.sections.map((section) => {
    const part = document.createElement('section');
    part.className = 'section';
    const heading = document.createElement('h2');
    heading.textContent = section.name;
    part.append(heading);
    for (const row of section.rows) {
      const line = document.createElement('div');
      line.className = 'row';
      line.setAttribute('role', 'group');
      line.setAttribute('aria-label', `${section.name}, row ${row.label}`);
      const label = document.createElement('span');
      label.className = 'row-label';
      label.textContent = row.label;
      label.setAttribute('aria-hidden', 'true');
      line.append(label);
      const inRow = (rows.get(`${section.name}\u0000${row.label}`) ?? []).sort((a, b) => a.number - b.number);
      for (const seat of inRow) {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'seat';
        button.dataset.label = seat.label;
        button.addEventListener('click', () => toggle(seat.id));
        buttons.set(seat.id, button);
        line.append(button);
      }
      part.append(line);
    }
    return part;
  });
  map.replaceChildren(...parts);
}

// Events that arrive while the map is being read are applied after it:
// the map may predate them, and applying one it already shows changes nothing.
let arriving: SeatEvent[] | undefined = [];
let reading: Promise<void> | undefined;
let readAgain = false;

async function readMap(): Promise<void> {
  if (!show) return;
  arriving ??= [];
  const { data, error } = await api.GET('/api/shows/{showId}/seats', {
    params: { path: { showId: show.id }, query: { from: legs.fromStop, to: legs.toStop } },
  });
  const waiting = arriving;
  arriving = undefined;
  if (!data) {
    report(problemText(error, 'The seat map could not be read.'));
    for (const event of waiting) receive(event);
    return;
  }
  if (buttons.size === 0) draw(show, data.seats);
  if (areas.size === 0 && data.areas?.length) drawAreas(data.areas);
  for (const room of data.areas ?? []) paintArea(room);
  for (const seat of data.seats) {
    seats.set(seat.id, seat);
    if (seat.status !== 'available') selected.delete(seat.id);
    paint(seat);
  }
  for (const event of waiting) receive(event);
  describeSelection();
  bookForm.hidden = false;
  if (legend) legend.hidden = false;
}

/** Reads the map again; calls while a read runs make one more read after it. */
function refresh(): void {
  if (reading) {
    readAgain = true;
    return;
  }
  reading = readMap().finally(() => {
    reading = undefined;
    if (readAgain) {
      readAgain = false;
      refresh();
    }
  });
}

function receive(event: SeatEvent): void {
  if (arriving) {
    arriving.push(event);
    return;
  }
  // A trip's seat is free between two stops only if no booking overlaps
  // them: the map, read again, knows; one event alone does not.
  if (show?.kind === 'trip') {
    refresh();
    return;
  }
  for (const seat of event.seats) setStatus(seat.id, statusAfter[event.type]);
  // An event counts an area's places, not which are left: the map says.
  if (event.areas?.length) refresh();
  describeSelection();
}

/**
 * The stream first, then the map: a stream without Last-Event-ID starts at
 * the show's newest event, so nothing between the map and the stream is
 * lost. A dropped stream resumes by itself with Last-Event-ID.
 */
function follow(detail: ShowDetail): void {
  const source = new EventSource(`/api/shows/${encodeURIComponent(detail.id)}/events`);
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    refresh();
  };
  source.addEventListener('open', () => {
    live.textContent = 'Live: seats change here as they are booked.';
    start();
  });
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      live.textContent = 'Not live: the event stream was refused. Reload the page to try again.';
      start();
    } else {
      live.textContent = 'Reconnecting to the live feed…';
    }
  });
  for (const type of Object.keys(statusAfter)) {
    source.addEventListener(type, (message) => {
      if (message instanceof MessageEvent && typeof message.data === 'string') receive(JSON.parse(message.data) as SeatEvent);
    });
  }
}

/** A trip's stops, as a form that reloads the page for the chosen part of the journey. */
function chooseLegs(detail: ShowDetail): void {
  const form = byId('legs', HTMLFormElement);
  const stops = detail.stops ?? [];
  if (detail.kind !== 'trip' || stops.length < 2) return;
  const showField = form.querySelector<HTMLInputElement>('input[name="show"]');
  if (showField) showField.value = detail.id;
  legs.fromStop = params.get('from') || undefined;
  legs.toStop = params.get('to') || undefined;
  for (const [name, chosen, fallback] of [
    ['from', legs.fromStop, stops[0]?.name],
    ['to', legs.toStop, stops.at(-1)?.name],
  ] as const) {
    const select = form.querySelector<HTMLSelectElement>(`select[name="${name}"]`);
    if (!select) continue;
    select.replaceChildren(...stops.map((stop) => new Option(stop.name, stop.name, false, stop.name === (chosen ?? fallback))));
  }
  form.hidden = false;
}

async function listShows(): Promise<void> {
  title.textContent = 'Seat maps';
  const { data, error } = await api.GET('/api/shows', { params: { query: { limit: 20 } } });
  if (!data) {
    report(problemText(error, 'The shows could not be listed.'));
    return;
  }
  const list = byId('show-list', HTMLUListElement);
  list.replaceChildren(
    ...data.items.map((item) => {
      const entry = document.createElement('li');
      const link = document.createElement('a');
      link.href = `?show=${encodeURIComponent(item.id)}`;
      link.textContent = `${item.name}, ${item.venue}, ${new Date(item.startsAt).toLocaleString()}`;
      entry.append(link);
      return entry;
    }),
  );
  if (!data.items.length) summary.textContent = 'No show is on sale.';
  byId('shows', HTMLElement).hidden = false;
}

async function book(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const places = wantedAreas().map(({ name, quantity }) => ({ name, quantity }));
  if (!show || (selected.size === 0 && places.length === 0)) return;
  const fields = new FormData(bookForm);
  const body: NewBooking = {
    showId: show.id,
    ...(selected.size ? { seatIds: [...selected] } : {}),
    ...(places.length ? { areas: places } : {}),
    customer: { name: String(fields.get('name') ?? '').trim(), email: String(fields.get('email') ?? '').trim() },
    ...legs,
  };
  // One key per press: a retried request (a lost answer) books once.
  const headers = typeof crypto.randomUUID === 'function' ? { 'Idempotency-Key': crypto.randomUUID() } : {};
  if (bookButton) bookButton.disabled = true;
  report('Booking…', false);
  try {
    const { data, error } = await api.POST('/api/bookings', { body, headers });
    if (!data) {
      report(problemText(error, 'The booking failed.'));
      // Someone took a seat first: the map, read again, shows by whom.
      refresh();
      return;
    }
    for (const seat of data.seats) setStatus(seat.id, data.status === 'pending' ? 'held' : 'booked');
    selected.clear();
    for (const area of areas.values()) area.wanted.value = '0';
    if (data.areas?.length) refresh();
    const done = document.createElement('p');
    const booked = [...data.seats.map((seat) => seat.label), ...(data.areas ?? []).map((area) => `${count(area.quantity, 'place', 'places')} in ${area.name}`)];
    done.textContent = `Booked ${booked.join(', ')} for ${price(data.totalPrice)}: booking ${data.id}, ${data.status}.`;
    const keep = document.createElement('p');
    keep.append('Keep this secret: it is shown once, and it reads or cancels the booking: ');
    const secret = document.createElement('code');
    secret.textContent = data.secret;
    keep.append(secret);
    result.replaceChildren(done, keep);
  } catch {
    report('The service could not be reached; the booking may not have been made.');
  } finally {
    for (const seat of seats.values()) paint(seat);
    describeSelection();
  }
}

async function main(): Promise<void> {
  const showId = params.get('show');
  if (!showId) {
    await listShows();
    return;
  }
  const { data, error } = await api.GET('/api/shows/{showId}', { params: { path: { showId } } });
  if (!data) {
    title.textContent = 'Seat map';
    report(problemText(error, 'The show could not be read.'));
    return;
  }
  show = data;
  document.title = `${data.name}: seat map`;
  title.textContent = `${data.name}, ${data.venue}`;
  price = (() => {
    const format = new Intl.NumberFormat(undefined, { style: 'currency', currency: data.currency });
    const scale = 10 ** (format.resolvedOptions().maximumFractionDigits ?? 2);
    return (minor: number) => format.format(minor / scale);
  })();
  chooseLegs(data);
  bookForm.addEventListener('submit', (submitted) => void book(submitted));
  live.textContent = 'Connecting to the live feed…';
  follow(data);
}

void main();

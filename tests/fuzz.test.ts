// Contract fuzzing: every operation of openapi.yaml, fed requests mutated
// from its own schemas and examples. No answer may be a 5xx, and every 4xx
// must be a problem; the app validates its responses against the contract,
// so a problem that breaks the contract would surface as a 500 here.
import { readFile } from 'node:fs/promises';
import $RefParser from '@apidevtools/json-schema-ref-parser';
import request from 'supertest';
import { expect, it } from 'vitest';
import { parse } from 'yaml';
import { apiSpecPath } from '../src/app.js';
import { admin, createShow, customer, door, testApp, testPool } from './support.js';

const pool = testPool(4);
const app = await testApp(pool);

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  uniqueItems?: boolean;
  format?: string;
  pattern?: string;
  enum?: Json[];
  allOf?: Schema[];
}
interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  schema: Schema;
  example?: Json;
}
interface Operation {
  operationId: string;
  parameters?: Parameter[];
  security?: unknown[];
  requestBody?: { content: Record<string, { schema: Schema; examples?: Record<string, { value: Json }> }> };
}

const spec = (await $RefParser.dereference(parse(await readFile(apiSpecPath, 'utf8')))) as unknown as {
  paths: Record<string, Record<string, Operation>>;
};

const typeOf = (schema: Schema) => (Array.isArray(schema.type) ? schema.type[0] : schema.type);

/** Values that break a schema, each with what it tries. */
function breakers(schema: Schema): Array<[string, Json]> {
  const out: Array<[string, Json]> = [['null', null]];
  switch (typeOf(schema)) {
    case 'string':
      out.push(['a number', 12345], ['an object', { a: 1 }], ['an empty string', '']);
      if (schema.maxLength !== undefined) out.push(['too long', 'x'.repeat(schema.maxLength + 1)]);
      if (schema.format) out.push([`not a ${schema.format}`, 'not-a-value!']);
      if (schema.pattern || schema.enum) out.push(['off the pattern', '!!\u0000??']);
      break;
    case 'integer':
    case 'number':
      out.push(['a string', 'many'], ['a fraction', 1.5], ['huge', 1e300], ['negative', -1]);
      if (schema.maximum !== undefined) out.push(['over the maximum', schema.maximum + 1]);
      if (schema.minimum !== undefined) out.push(['under the minimum', schema.minimum - 1]);
      break;
    case 'boolean':
      out.push(['a string', 'yes'], ['a number', 1]);
      break;
    case 'array':
      out.push(['a string', 'items'], ['empty', []], ['an object', {}]);
      if (schema.maxItems !== undefined) out.push(['too many items', Array.from({ length: schema.maxItems + 1 }, (_, i) => i)]);
      break;
    case 'object':
      out.push(['an array', []], ['a string', 'object']);
      break;
  }
  return out;
}

/** Every mutation of a valid value: each field removed, broken, or joined by a stranger. */
function mutations(value: Json, schema: Schema, path: string, depth = 0): Array<[string, Json]> {
  const out: Array<[string, Json]> = [];
  if (depth > 3) return out;
  if (value && typeof value === 'object' && !Array.isArray(value) && schema.properties) {
    out.push([`${path} with an unknown field`, { ...value, unexpected: true }]);
    for (const [key, child] of Object.entries(schema.properties)) {
      const rest = { ...value };
      delete rest[key];
      if (key in value) out.push([`${path}.${key} removed`, rest]);
      for (const [what, broken] of breakers(child)) out.push([`${path}.${key} ${what}`, { ...value, [key]: broken }]);
      const current = value[key];
      if (current !== undefined) {
        for (const [what, inner] of mutations(current, child, `${path}.${key}`, depth + 1)) out.push([what, { ...value, [key]: inner }]);
      }
    }
  } else if (Array.isArray(value) && schema.items && value.length > 0) {
    const first = value[0] as Json;
    for (const [what, broken] of breakers(schema.items)) out.push([`${path}[0] ${what}`, [broken, ...value.slice(1)]]);
    if (schema.uniqueItems) out.push([`${path} with a duplicate`, [first, first, ...value.slice(1)]]);
    for (const [what, inner] of mutations(first, schema.items, `${path}[0]`, depth + 1)) out.push([what, [inner, ...value.slice(1)]]);
  }
  return out;
}

it('answers every mutated request of every operation without a 5xx, with problems for 4xx', async () => {
  const show = await createShow(app);
  const hold = (await request(app).post('/api/bookings').send({ showId: show.id, quantity: 1, hold: true, customer: customer() }).expect(201)).body;
  const ids: Record<string, string> = { showId: show.id, bookingId: hold.id, seatId: String(hold.seats[0]?.id) };
  const real = (value: Json): Json => JSON.parse(JSON.stringify(value).replaceAll('0b6a3c1e-6f3e-4a57-9a52-1f0e2b7d9c11', show.id));

  let cases = 0;
  const failures: string[] = [];
  const send = async (operation: Operation, method: string, url: string, label: string, body?: Json | string, headers: Record<string, string> = {}) => {
    cases += 1;
    let req = request(app)[method as 'get'](url);
    // Scans take the door token alone, so their bodies are fuzzed past the credential check.
    if (operation.security?.length) req = req.set(operation.security.every((requirement) => 'doorToken' in (requirement as object)) ? door : admin);
    for (const [name, value] of Object.entries(headers)) req = req.set(name, value);
    if (body !== undefined) req = req.set('Content-Type', 'application/json').send(typeof body === 'string' ? body : JSON.stringify(body));
    const response = await req;
    const where = `${operation.operationId}: ${label} → ${response.status}`;
    if (response.status >= 500 && response.status !== 503) failures.push(`${where} ${JSON.stringify(response.body).slice(0, 300)}`);
    if (response.status >= 400) {
      if (!String(response.headers['content-type']).startsWith('application/problem+json')) failures.push(`${where}: not a problem`);
      else if (!/^\/problems\/[a-z-]+$/.test(response.body.type) || response.body.status !== response.status) failures.push(`${where}: malformed problem`);
    }
  };

  for (const [template, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      const params = operation.parameters ?? [];
      const pathFor = (overrides: Record<string, string> = {}) =>
        template.replace(/\{(\w+)\}/g, (_m, name: string) => encodeURIComponent(overrides[name] ?? ids[name] ?? ''));
      // Path parameters: malformed, unknown, overlong.
      for (const p of params.filter((p) => p.in === 'path')) {
        for (const bad of ['not-a-uuid', '00000000-0000-4000-8000-000000000000', 'x'.repeat(2000), "'; drop table app.bookings; --"]) {
          await send(operation, method, pathFor({ [p.name]: bad }), `path ${p.name}=${bad.slice(0, 20)}`, method === 'post' ? {} : undefined);
        }
      }
      // Query parameters and headers: every breaking value, and a stranger.
      const url = pathFor();
      if (operation.operationId === 'getShowEvents' || method === 'get') {
        for (const p of params.filter((p) => p.in === 'query')) {
          for (const [what, bad] of breakers(p.schema)) {
            await send(operation, method, `${url}?${p.name}=${encodeURIComponent(typeof bad === 'string' ? bad : JSON.stringify(bad))}`, `query ${p.name} ${what}`);
          }
        }
        await send(operation, method, `${url}?unexpected=1`, 'an unknown query parameter');
      }
      for (const p of params.filter((p) => p.in === 'header' && p.name !== 'Last-Event-ID')) {
        await send(operation, method, url, `header ${p.name} too long`, method === 'post' ? {} : undefined, { [p.name]: 'x'.repeat(2000) });
      }
      // Bodies: mutations of every example, and bodies that are not the right JSON at all.
      const content = operation.requestBody?.content['application/json'];
      if (content) {
        for (const raw of ['', '{', '[]', '"text"', '123', 'null', '{"a":1}'.repeat(3)]) {
          await send(operation, method, url, `body ${JSON.stringify(raw)}`, raw);
        }
        for (const example of Object.values(content.examples ?? {})) {
          for (const [what, body] of mutations(real(example.value), content.schema, 'body')) {
            await send(operation, method, url, what, body);
          }
        }
      }
    }
  }
  console.log(`contract fuzzing: ${cases} requests across ${Object.keys(spec.paths).length} paths`);
  expect(failures).toEqual([]);
  expect(cases).toBeGreaterThan(500);
}, 240_000);

it('refuses every operation that needs a credential when none is sent, before acting', async () => {
  const show = await createShow(app);
  const hold = (await request(app).post('/api/bookings').send({ showId: show.id, quantity: 1, hold: true, customer: customer() }).expect(201)).body;
  const ids: Record<string, string> = { showId: show.id, bookingId: hold.id, seatId: String(hold.seats[0]?.id) };
  const guarded: string[] = [];
  for (const [template, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      // An operation with an empty requirement ({}) is open to anyone.
      const security = operation.security ?? [];
      if (!security.length || security.some((requirement) => Object.keys(requirement as object).length === 0)) continue;
      const url = template.replace(/\{(\w+)\}/g, (_m, name: string) => ids[name] ?? '');
      const response = await request(app)[method as 'get'](url).set('Content-Type', 'application/json').send(method === 'post' ? '{}' : undefined);
      expect(response.status, `${operation.operationId} without a credential`).toBe(401);
      expect(response.headers['www-authenticate']).toMatch(/^Bearer realm=/);
      guarded.push(operation.operationId);
    }
  }
  expect(guarded.sort()).toEqual([
    'cancelBooking', 'checkInTicket', 'confirmBooking', 'createShow', 'getBooking', 'getCheckInCounts', 'getMetrics',
    'getTicketQrCode', 'listBookingTickets', 'listShowBookings', 'uploadCheckIns',
  ]);
  const { rows } = await pool.query<{ status: string }>('select status::text from app.bookings where id = $1', [hold.id]);
  expect(rows[0]?.status).toBe('pending');
});

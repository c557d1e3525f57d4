// The error vocabulary is defined once (src/problem.ts) and which routes need
// a credential is the contract's `security`: these check that what is
// written elsewhere agrees with them, and that every guarded route refuses.
import { readFileSync } from 'node:fs';
import { Router } from 'express';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { guardedRoutes, guardRoutes } from '../src/admin.js';
import { apiSpecPath } from '../src/app.js';
import { projectRoot } from '../src/paths.js';
import { problemForFailure, problemForSqlstate, problemTypes, type ProblemType } from '../src/problem.js';
import { testApp, testPool } from './support.js';

const readme = readFileSync(`${projectRoot}README.md`, 'utf8');
const conventions = readFileSync(`${projectRoot}db/CONVENTIONS.md`, 'utf8');
const contractText = readFileSync(apiSpecPath, 'utf8');
const vocabulary = Object.keys(problemTypes).sort();
const isProblemType = (name: string): name is ProblemType => name in problemTypes;

/** The rows of the markdown table that follows `heading`. */
function tableAfter(text: string, heading: string): string[][] {
  const start = text.indexOf(heading);
  expect(start, `no "${heading}" in the document`).toBeGreaterThanOrEqual(0);
  const lines = text.slice(start).split('\n').slice(1);
  const first = lines.findIndex((line) => line.startsWith('|'));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.split('|').slice(1, -1).map((cell) => cell.trim()));
  }
  return rows;
}

describe('the error vocabulary', () => {
  it("is what the README's problem table lists, type by type and with each type's status", () => {
    const rows = tableAfter(readme, 'Problems the API answers with:');
    const listed = rows.flatMap(([status, types]) =>
      [...(types ?? '').matchAll(/`\/problems\/([a-z-]+)`/g)].map((match) => ({ status: Number(status), type: match[1] ?? '' })),
    );
    expect(listed.map((row) => row.type).sort()).toEqual(vocabulary);
    for (const { status, type } of listed) {
      expect(isProblemType(type) && problemTypes[type].status, type).toBe(status);
    }
  });

  it('holds every problem type the contract names', () => {
    const named = [...new Set([...contractText.matchAll(/\/problems\/([a-z-]+)/g)].map((match) => match[1] ?? ''))];
    expect(named.length).toBeGreaterThan(0);
    expect(named.filter((type) => !isProblemType(type))).toEqual([]);
  });

  it("maps each custom SQLSTATE as db/CONVENTIONS.md's table says", () => {
    const rows = tableAfter(conventions, '## Errors: custom SQLSTATEs').filter(([, , , status]) => status !== '—');
    expect(rows.length).toBeGreaterThan(10);
    for (const [code, , , status, type] of rows) {
      const sqlstate = (code ?? '').replaceAll('`', '');
      const problem = problemForSqlstate(sqlstate, { message: 'from the database' });
      expect(problem && { status: problem.status, type: `\`/problems/${problem.problemType}\`` }, sqlstate).toEqual({
        status: Number(status),
        type,
      });
    }
  });

  it("answers a failed booking as the problem its failure reason names", () => {
    expect(problemForFailure('seats-unavailable')).toBe('seat-unavailable');
    expect(problemForFailure('not-enough-seats')).toBe('not-enough-seats');
  });
});

describe('the routes the contract guards', () => {
  const contract: unknown = parse(contractText);
  const routes = guardedRoutes(contract);

  it('are read from its security requirements, and the open operations are not among them', () => {
    const names = routes.map((route) => `${route.method} ${route.path}`);
    expect(names).toContain('post /api/shows');
    expect(names).toContain('get /metrics');
    expect(names).not.toContain('get /api/shows');
    expect(names).not.toContain('post /api/bookings');
    // An operation that also allows no credential (`{}`) is open, as the event history is.
    expect(names).not.toContain('get /api/shows/:showId/events');
  });

  it('each refuse a request without a credential with 401, before reading its body', async () => {
    const app = await testApp(testPool(2));
    const id = '00000000-0000-4000-8000-000000000000';
    expect(routes.length).toBeGreaterThanOrEqual(6);
    for (const { method, path } of routes) {
      const url = path.replaceAll(/:[A-Za-z]+/g, id);
      const call = request(app)[method](url);
      const response = await (method === 'get' ? call : call.set('Content-Type', 'application/json').send('{not json'));
      expect({ route: `${method} ${path}`, status: response.status, type: response.body.type }).toEqual({
        route: `${method} ${path}`,
        status: 401,
        type: '/problems/unauthorized',
      });
      expect(response.headers['www-authenticate']).toMatch(/^Bearer realm=/);
    }
  });

  it('stop the app from being built when a guarded route has no credential check', () => {
    const contract = { paths: { '/api/things/{thingId}': { post: { security: [{ apiKey: [] }] }, get: { security: [{}] } } } };
    expect(guardedRoutes(contract)).toEqual([{ method: 'post', path: '/api/things/:thingId', schemes: 'apiKey' }]);
    expect(() => guardRoutes(Router(), contract, { adminToken: (_req, _res, next) => next() })).toThrow(/POST \/api\/things\/:thingId.*apiKey/);
    expect(() => guardRoutes(Router(), contract, { apiKey: (_req, _res, next) => next() })).not.toThrow();
  });
});

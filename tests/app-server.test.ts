// The service's HTTP server creates each request and response with its
// Express app's prototypes, so Express changes no object's prototype and
// every request keeps one hidden class (see src/app-server.ts).
import { spawnSync } from 'node:child_process';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { describe, expect, it } from 'vitest';
import { createAppServer } from '../src/app-server.js';
import { projectRoot } from '../src/paths.js';

type Both = { request: boolean; response: boolean };

function hiddenClasses(): { statuses: number[]; same: Both[]; fast: Both[] } {
  const run = spawnSync(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', 'tests/harness/hidden-classes.ts'], { cwd: projectRoot, encoding: 'utf8', timeout: 30_000 });
  // A warning on stderr is no failure; a child that did not finish is.
  expect(run.status, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as ReturnType<typeof hiddenClasses>;
}

describe('the app server', () => {
  it('creates requests and responses with the app’s prototypes, before Express sees them', async () => {
    const app = express();
    app.get('/answer', (req, res) => {
      res.set('X-Answered', 'yes').set('X-Same-App', String(req.app === app && res.app === app)).json({ answer: 42 });
    });
    const server = createAppServer(app);
    const born: boolean[] = [];
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
      born.push(Object.getPrototypeOf(req) === app.request && Object.getPrototypeOf(res) === app.response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      for (let n = 0; n < 3; n += 1) {
        const answer = await fetch(`http://127.0.0.1:${port}/answer`);
        expect(answer.status).toBe(200);
        expect(answer.headers.get('x-answered')).toBe('yes');
        expect(answer.headers.get('x-same-app')).toBe('true');
        expect(await answer.json()).toEqual({ answer: 42 });
      }
      expect(born).toEqual([true, true, true]);
    } finally {
      server.close();
    }
  });

  it('keeps one hidden class, with fast properties, for every request and response', () => {
    // (Served by a plain http.createServer, Node 20's V8 gives every one a
    // new hidden class; a later V8 may not, so that is not asserted here.
    // Dictionary properties are checked too: objects in that mode may share
    // a hidden class by chance, as long as V8 keeps a cache of them.)
    const { statuses, same, fast } = hiddenClasses();
    expect(statuses).toEqual(Array.from({ length: 12 }, () => 201));
    expect(fast).toEqual(Array.from({ length: 12 }, () => ({ request: true, response: true })));
    expect(same).toEqual(Array.from({ length: 11 }, () => ({ request: true, response: true })));
  });
});

// Run under `node --allow-natives-syntax --import tsx`: serves an Express
// app (a body parser and a route) from createAppServer, makes twelve
// requests, and prints, as JSON, whether each request and response had the
// previous one's hidden class and whether its properties were fast (not a
// dictionary). `plain` as the argument serves it from
// http.createServer instead, for comparison by hand.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { createAppServer } from '../../src/app-server.js';

// V8's own check, reachable only with --allow-natives-syntax.
const haveSameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;
const hasFastProperties = new Function('a', 'return %HasFastProperties(a)') as (a: object) => boolean;

const app = express();
app.post('/echo', express.json(), (req, res) => {
  res.status(201).json({ echoed: (req.body as { n?: number }).n });
});
const server = process.argv[2] === 'plain' ? createServer(app) : createAppServer(app);
let previous: [IncomingMessage, ServerResponse] | undefined;
const same: Array<{ request: boolean; response: boolean }> = [];
const fast: Array<{ request: boolean; response: boolean }> = [];
server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
  res.on('finish', () => {
    fast.push({ request: hasFastProperties(req), response: hasFastProperties(res) });
    if (previous) same.push({ request: haveSameMap(req, previous[0]), response: haveSameMap(res, previous[1]) });
    previous = [req, res];
  });
});
server.listen(0, '127.0.0.1', async () => {
  const { port } = server.address() as AddressInfo;
  const statuses: number[] = [];
  for (let n = 0; n < 12; n += 1) {
    const answer = await fetch(`http://127.0.0.1:${port}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    statuses.push(answer.status);
    await answer.text();
  }
  server.close();
  process.stdout.write(JSON.stringify({ statuses, same, fast }));
});

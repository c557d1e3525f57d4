// The least an Express 5 service can do for a booking request on this
// machine: parse the JSON body, make one round trip to PostgreSQL
// (`select 1`) from a pool the size of the service's, answer 201 with a
// small JSON body. No contract, no booking, no logging, no security headers,
// no metrics.
//
// It is served as the service is, from requests and responses born with the
// app's prototypes (src/app-server.ts): served by a plain `app.listen`, the
// same server cost about twice the CPU a request (0.13 against 0.06 ms under
// the spread and flash loads, 2026-11-26), which would make it no ceiling.
//
// The bench puts it under each workload's load, on the same database server
// in the same run: its rate is the ceiling of any Express service here, so
// the run shows how much of that the service reaches, and how far HTTP alone
// stands from the minimal function's pgbench rate. The bench starts it as a
// child process, with DATABASE_URL, PORT and POOL_SIZE.
import express from 'express';
import pg from 'pg';
import { createAppServer } from '../src/app-server.js';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.POOL_SIZE) || 8 });
const app = express();
app.use(express.json());
app.post('/book', async (req, res) => {
  const { rows } = await pool.query<{ one: number }>('select 1 as one');
  res.status(201).json({ showId: (req.body as { showId?: string }).showId, status: 'confirmed', one: rows[0]?.one });
});
// What the bench waits for before loading it, as for the service.
app.get('/ready', (_req, res) => {
  res.end();
});
const server = createAppServer(app).listen(Number(process.env.PORT), '127.0.0.1');
process.once('SIGTERM', () => {
  server.close();
  void pool.end();
});

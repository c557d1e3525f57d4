// The rules the Citus plan in docs/scaling.md depends on, read from the
// catalog of the migrated database, so that every future table, key and
// function is held to them too:
//   - every table of schema app is distributed by show (it has show_id, or
//     is app.shows itself), or is on a short explicit list;
//   - every primary key, unique key and exclusion constraint of a table
//     distributed by show includes the show (a shard enforces only what
//     lies within it);
//   - foreign keys between tables distributed by show join on the show;
//   - every function that writes or locks a show's rows takes the show as
//     a uuid argument named show_id, the argument create_distributed_function
//     routes the call by, or is on a short explicit list.
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { testPool } from './support.js';

const pool = testPool(2);

/** Tables copied to every node: small, rarely written, read by the booking path. */
const REFERENCE_TABLES: Record<string, string> = {
  'app.keys': 'the secrets that derive booking secrets and client keys: a few rows, written once by a migration',
};

/** Tables distributed by a column other than the show: not colocated yet (docs/scaling.md says what changes). */
const DISTRIBUTED_OTHERWISE: Record<string, string> = {
  'app.idempotency_keys': 'key',
};

/** The root of the colocation group, distributed by its own id. */
const SHOWS = 'app.shows';

/**
 * Functions that write or lock a show's rows without taking the show: run on
 * the coordinator, each for a stated reason (docs/scaling.md).
 */
const WITHOUT_SHOW_ARGUMENT: Record<string, string> = {
  'app.create_show': 'makes the show, so there is no show to route by until it has run',
  'app.sweep': 'the background expiry of every show: per node, or per show, under Citus',
  'app.sequence_events': 'the sequencer over every show: per show under Citus',
  // By booking id: the API's paths name the booking, not its show. Under
  // Citus the show is found first (the booking's row), then the call routed.
  'app.lock_booking': 'by booking id',
  'app.confirm_booking': 'by booking id',
  'app.cancel_booking': 'by booking id',
};

interface Layout {
  /** Table → its distribution column: show_id, or id for app.shows. */
  byShow: Map<string, string>;
  unclassified: string[];
}

async function layout(db: pg.ClientBase | pg.Pool): Promise<Layout> {
  const { rows } = await db.query<{ table: string; has_show_id: boolean }>(
    `select c.oid::regclass::text as table,
            exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'show_id' and not a.attisdropped) as has_show_id
     from pg_class c
     where c.relnamespace = 'app'::regnamespace and c.relkind in ('r', 'p')
     order by 1`,
  );
  const byShow = new Map<string, string>();
  const unclassified: string[] = [];
  for (const row of rows) {
    if (row.table === SHOWS) byShow.set(row.table, 'id');
    else if (row.has_show_id && !(row.table in REFERENCE_TABLES) && !(row.table in DISTRIBUTED_OTHERWISE)) byShow.set(row.table, 'show_id');
    else if (!(row.table in REFERENCE_TABLES) && !(row.table in DISTRIBUTED_OTHERWISE)) unclassified.push(row.table);
  }
  return { byShow, unclassified };
}

/** Unique keys, unique indexes and exclusion constraints of tables distributed by show that leave the show out. */
async function keysWithoutShow(db: pg.ClientBase | pg.Pool): Promise<string[]> {
  const { byShow } = await layout(db);
  const { rows } = await db.query<{ table: string; index: string; columns: string[]; show_with_equals: boolean }>(
    `select i.indrelid::regclass::text as table, i.indexrelid::regclass::text as index,
            array(select a.attname::text from unnest(i.indkey) with ordinality k(attnum, ord)
                  join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.ord) as columns,
            -- An exclusion constraint separates shows only if it compares the show with =.
            coalesce((select bool_or(o.oprname = '=' and a.attname in ('show_id', 'id'))
                      from pg_constraint x
                      cross join lateral unnest(x.conkey, x.conexclop) u(attnum, op)
                      join pg_attribute a on a.attrelid = x.conrelid and a.attnum = u.attnum
                      join pg_operator o on o.oid = u.op
                      where x.conindid = i.indexrelid and x.contype = 'x'), true) as show_with_equals
     from pg_index i
     join pg_class c on c.oid = i.indrelid
     where c.relnamespace = 'app'::regnamespace
       and (i.indisunique or i.indisexclusion)`,
  );
  return rows
    .filter((row) => byShow.has(row.table))
    .filter((row) => !row.columns.includes(byShow.get(row.table) ?? '') || !row.show_with_equals)
    .map((row) => `${row.index} (${row.columns.join(', ')}) on ${row.table}`);
}

/** Foreign keys that a shard could not check locally: not on the show, or reaching out of the colocation group. */
async function foreignKeysAcrossShows(db: pg.ClientBase | pg.Pool): Promise<string[]> {
  const { byShow } = await layout(db);
  const { rows } = await db.query<{ name: string; from: string; to: string; pairs: { from: string; to: string }[] }>(
    `select f.conname as name, f.conrelid::regclass::text as from, f.confrelid::regclass::text as to,
            array(select json_build_object('from', a.attname, 'to', b.attname)
                  from unnest(f.conkey, f.confkey) u(k, fk)
                  join pg_attribute a on a.attrelid = f.conrelid and a.attnum = u.k
                  join pg_attribute b on b.attrelid = f.confrelid and b.attnum = u.fk) as pairs
     from pg_constraint f
     where f.contype = 'f' and f.connamespace = 'app'::regnamespace`,
  );
  return rows
    .filter((row) => {
      const from = byShow.get(row.from);
      const to = byShow.get(row.to);
      if (row.to in REFERENCE_TABLES) return false;
      if (!from || !to) return true;
      return !row.pairs.some((pair) => pair.from === from && pair.to === to);
    })
    .map((row) => `${row.name}: ${row.from} → ${row.to}`);
}

/** Functions that write or lock rows of tables distributed by show, without a show_id uuid argument, and not on the list. */
async function functionsWithoutShow(db: pg.ClientBase | pg.Pool): Promise<string[]> {
  const { byShow } = await layout(db);
  const tables = [...byShow.keys()].map((table) => table.replace(/^app\./, '')).join('|');
  const { rows } = await db.query<{ name: string; signature: string; takes_show: boolean; takes_booking: boolean }>(
    `select p.pronamespace::regnamespace::text || '.' || p.proname as name, p.oid::regprocedure::text as signature,
            exists (select 1 from unnest(p.proargnames, p.proargtypes::oid[]) a(name, type)
                    where a.name = 'show_id' and a.type = 'uuid'::regtype) as takes_show,
            exists (select 1 from unnest(p.proargnames, p.proargtypes::oid[]) a(name, type)
                    where a.name = 'booking_id' and a.type = 'uuid'::regtype) as takes_booking
     from pg_proc p
     where p.pronamespace = 'app'::regnamespace
       and p.prorettype <> 'trigger'::regtype
       and p.prosrc ~* ('(insert\\s+into|update|delete\\s+from)\\s+app\\.(' || $1 || ')\\M|for\\s+(no\\s+key\\s+)?update|for\\s+(key\\s+)?share')`,
    [tables],
  );
  return rows
    .filter((row) => !row.takes_show)
    .filter((row) => {
      const reason = WITHOUT_SHOW_ARGUMENT[row.name];
      if (!reason) return true;
      // What goes by booking id must take it, so the show can be found from it.
      return reason === 'by booking id' && !row.takes_booking;
    })
    .map((row) => row.signature);
}

describe('Citus readiness: the rules docs/scaling.md depends on', () => {
  it('classifies every table: distributed by show, or on the short lists of reference tables and tables distributed otherwise', async () => {
    const { byShow, unclassified } = await layout(pool);
    expect(unclassified).toEqual([]);
    expect([...byShow.keys()].sort()).toEqual(
      [
        'app.area_ledger',
        'app.areas',
        'app.booking_seats',
        'app.bookings',
        'app.seat_categories',
        'app.seat_events',
        'app.seats',
        'app.show_stops',
        'app.shows',
        'app.ticket_admissions',
        'app.ticket_scans',
      ],
    );
    // The lists stay short and name tables that exist.
    expect(Object.keys(REFERENCE_TABLES).length + Object.keys(DISTRIBUTED_OTHERWISE).length).toBeLessThanOrEqual(3);
    const { rows } = await pool.query<{ table: string }>(
      `select c.oid::regclass::text as table from pg_class c where c.oid::regclass::text = any($1)`,
      [[...Object.keys(REFERENCE_TABLES), ...Object.keys(DISTRIBUTED_OTHERWISE)]],
    );
    expect(rows.map((row) => row.table).sort()).toEqual([...Object.keys(REFERENCE_TABLES), ...Object.keys(DISTRIBUTED_OTHERWISE)].sort());
  });

  it('gives every table distributed by show a show_id that is never null, of the type of the show id', async () => {
    const { rows } = await pool.query<{ table: string; type: string; not_null: boolean }>(
      `select a.attrelid::regclass::text as table, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as not_null
       from pg_attribute a join pg_class c on c.oid = a.attrelid
       where c.relnamespace = 'app'::regnamespace and c.relkind in ('r', 'p') and a.attname = 'show_id' and not a.attisdropped`,
    );
    const { byShow } = await layout(pool);
    const perShow = rows.filter((row) => byShow.has(row.table));
    expect(perShow.length).toBe(byShow.size - 1);
    for (const row of perShow) expect({ table: row.table, type: row.type, notNull: row.not_null }).toEqual({ table: row.table, type: 'uuid', notNull: true });
  });

  it('includes the show in every primary key, unique key and exclusion constraint of a table distributed by show', async () => {
    expect(await keysWithoutShow(pool)).toEqual([]);
  });

  it('joins every foreign key between tables distributed by show on the show, and none reaches out of the group', async () => {
    expect(await foreignKeysAcrossShows(pool)).toEqual([]);
  });

  it("gives every function that writes or locks a show's rows the show as its show_id argument, but the listed few", async () => {
    expect(await functionsWithoutShow(pool)).toEqual([]);
    // The booking core is among them, as the plan's create_distributed_function names it.
    const { rows } = await pool.query<{ signature: string }>(
      `select p.oid::regprocedure::text as signature from pg_proc p
       where p.pronamespace = 'app'::regnamespace and p.proname = 'create_booking' and p.proargnames[1] = 'show_id'`,
    );
    expect(rows.map((row) => row.signature).sort()).toEqual([
      'app.create_booking(uuid,jsonb,text,integer,integer,integer,text,jsonb)',
      'app.create_booking(uuid,jsonb,text,integer,integer,integer,text,jsonb,bigint[],integer)',
    ]);
  });

  it('finds what breaks a rule: a new table, a key without the show, a foreign key off the show, a function without it', async () => {
    const client = await pool.connect();
    try {
      await client.query('begin');
      await client.query('create table app.readiness_orphan (id bigint primary key)');
      await client.query('create table app.readiness_probe (id bigint primary key, show_id uuid not null, seat_id bigint)');
      await client.query('create unique index readiness_probe_seat on app.readiness_probe (seat_id)');
      await client.query(
        'create table app.readiness_child (show_id uuid not null, probe_id bigint references app.readiness_probe (id), primary key (show_id, probe_id))',
      );
      await client.query(
        `create function app.readiness_probe_write(seat bigint) returns void language sql
         as $$ update app.seats set for_sale = false where id = seat $$`,
      );
      expect((await layout(client)).unclassified).toEqual(['app.readiness_orphan']);
      expect((await keysWithoutShow(client)).sort()).toEqual([
        'app.readiness_probe_pkey (id) on app.readiness_probe',
        'app.readiness_probe_seat (seat_id) on app.readiness_probe',
      ]);
      expect(await foreignKeysAcrossShows(client)).toEqual(['readiness_child_probe_id_fkey: app.readiness_child → app.readiness_probe']);
      expect(await functionsWithoutShow(client)).toEqual(['app.readiness_probe_write(bigint)']);
    } finally {
      await client.query('rollback');
      client.release();
    }
  });
});

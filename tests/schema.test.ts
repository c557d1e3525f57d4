// db/schema.sql is dumped from the migrations run in PGlite: it must be
// current, and PGlite must build what the real server builds from them.
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import type { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { dumpSchema, migratedPGlite, schemaFile } from '../db/dump-schema.js';

// One line per object of the schema and the definition the server gives
// it; sorted in JavaScript, since the two servers' collations may differ.
// uuid-ossp is the rate limit store's, made by its own migrations (src/rate-limits.ts).
const CATALOG = `
select 'extension ' || extname || ' in ' || extnamespace::regnamespace as line
  from pg_extension where extname not in ('plpgsql', 'uuid-ossp')
union all
select 'type ' || t.typname || ': ' || string_agg(e.enumlabel, ', ' order by e.enumsortorder)
  from pg_type t join pg_enum e on e.enumtypid = t.oid
 where t.typnamespace = 'app'::regnamespace group by t.typname
union all
select 'relation ' || relname || ': ' || relkind::text || ' ' || coalesce(array_to_string(reloptions, ','), '')
  from pg_class where relnamespace = 'app'::regnamespace
union all
select 'column ' || c.relname || '.' || a.attname || ': ' || a.attnum || ' ' || format_type(a.atttypid, a.atttypmod)
       || case when a.attnotnull then ' not null' else '' end
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || ' ' || a.attgenerated::text || a.attidentity::text || ' ' || coalesce(a.attstattarget::text, '')
  from pg_attribute a join pg_class c on c.oid = a.attrelid
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
 where c.relnamespace = 'app'::regnamespace and a.attnum > 0 and not a.attisdropped
union all
select 'constraint ' || conrelid::regclass || '.' || conname || ': ' || pg_get_constraintdef(oid)
  from pg_constraint where connamespace = 'app'::regnamespace
union all
select 'index ' || pg_get_indexdef(i.indexrelid)
  from pg_index i join pg_class c on c.oid = i.indexrelid where c.relnamespace = 'app'::regnamespace
union all
select 'trigger ' || pg_get_triggerdef(t.oid)
  from pg_trigger t join pg_class c on c.oid = t.tgrelid
 where c.relnamespace = 'app'::regnamespace and not t.tgisinternal
union all
select 'function ' || pg_get_functiondef(oid)
  from pg_proc where pronamespace = 'app'::regnamespace and prokind in ('f', 'p')
union all
select 'sequence ' || s.seqrelid::regclass || ': ' || concat_ws(' ', s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
  from pg_sequence s join pg_class c on c.oid = s.seqrelid where c.relnamespace = 'app'::regnamespace
union all
select 'comment on ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description
  from pg_description d, pg_identify_object(d.classoid, d.objoid, d.objsubid) o
 where o.schema = 'app' or (o.type = 'schema' and o.identity = 'app')
`;

const VERSION = `select current_setting('server_version_num')::int as v`;

/** The catalog's lines, with a search path that names every schema but pg_catalog. */
async function catalog(query: (sql: string) => Promise<{ rows: { line: string }[] }>): Promise<string[]> {
  await query('set search_path = pg_catalog');
  return (await query(CATALOG)).rows.map((row) => row.line).sort();
}

describe('db/schema.sql', () => {
  let db: PGlite;
  beforeAll(async () => {
    db = await migratedPGlite();
  });
  afterAll(() => db.close());

  it('is what the committed migrations build (npm run db:schema writes it)', async () => {
    const committed = await readFile(schemaFile, 'utf8');
    expect(await dumpSchema(db), 'db/schema.sql is stale: run npm run db:schema').toBe(committed);
  });

  it('comes from the catalog the real server builds from the same migrations', async (context) => {
    const dumped = await catalog((sql) => db.query<{ line: string }>(sql));
    const dumpedVersion = (await db.query<{ v: number }>(VERSION)).rows[0]?.v ?? 0;
    const client = new pg.Client({ connectionString: inject('directUrl') });
    await client.connect();
    try {
      const version = (await client.query<{ v: number }>(VERSION)).rows[0]?.v ?? 0;
      if (Math.floor(version / 10000) !== Math.floor(dumpedVersion / 10000)) {
        context.skip(`the test server is PostgreSQL ${version}, PGlite is ${dumpedVersion}: definitions differ between majors`);
      }
      const real = await catalog((sql) => client.query<{ line: string }>(sql));
      expect(dumped.length).toBeGreaterThan(100);
      expect(dumped).toEqual(real);
    } finally {
      await client.end();
    }
  });
});

--! Previous: sha1:9e48a96eb6375b733a8e550f925482625fb93771
--! Hash: sha1:b3c173fa45e48583a6b4ad2f41abfc3e84ab3eed
--! Message: Safe in public: booking secrets, sales windows, hold limits, public events without booking ids

-- Safe in public. A booking is readable and changeable only with its own
-- secret (or by the admin); public seat events carry no booking ids; a show
-- sells only inside its sales window; one client or one email can hold only
-- so many seats of a show; names refuse control and direction-override
-- characters; instants stay within years PostgreSQL returns as RFC 3339.
-- Idempotent while it is current.sql: everything is dropped and made anew.

create extension if not exists pgcrypto with schema public;

-- The service's own keys, made once, never leaving the database. The
-- booking-secret key derives the secret of a booking made with an
-- Idempotency-Key, so a replay can answer the same secret without the
-- secret being stored; the client-key key turns client addresses into
-- opaque keys for the hold limits.
create table if not exists app.keys (
  name text primary key,
  key bytea not null check (octet_length(key) = 32)
);
insert into app.keys (name, key)
values ('booking-secret', public.gen_random_bytes(32)), ('client-key', public.gen_random_bytes(32))
on conflict (name) do nothing;
comment on table app.keys is 'Server-side keys for derived booking secrets and client keys; never sent to a client.';

-- Bookings made before this migration have no secret: only the admin reads them.
alter table app.bookings add column if not exists secret_hash bytea;
alter table app.bookings add column if not exists client_key text;
comment on column app.bookings.secret_hash is 'SHA-256 of the booking''s secret; the secret itself is never stored.';
comment on column app.bookings.client_key is 'Opaque key of the client address that made a hold (app.client_key), for the hold limits.';

-- The hold limits count a client's and an email's live holds of one show.
-- Only holds carry expires_at, so the direct bookings that pass through
-- pending inside create_booking never enter these indexes.
drop index if exists app.bookings_client_holds_idx;
create index bookings_client_holds_idx on app.bookings (client_key, show_id)
  where status = 'pending' and expires_at is not null;
drop index if exists app.bookings_email_holds_idx;
create index bookings_email_holds_idx on app.bookings (show_id, lower(customer_email))
  where status = 'pending' and expires_at is not null;

alter table app.shows add column if not exists sales_start_at timestamptz;
alter table app.shows add column if not exists sales_end_at timestamptz;
update app.shows set sales_end_at = starts_at where sales_end_at is null;
alter table app.shows alter column sales_end_at set not null;
comment on column app.shows.sales_start_at is 'When sales open; null: from creation.';
comment on column app.shows.sales_end_at is 'When sales close; by default when the show starts.';

-- Text a person reads must not carry control characters or the invisible
-- marks that reorder what is displayed around them (bidirectional overrides
-- and isolates, as in "Trojan Source").
create or replace function app.is_printable(value text) returns boolean
language sql immutable parallel safe
set search_path = pg_catalog
as $$
  select value !~ '[\x01-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]';
$$;
comment on function app.is_printable(text) is
  'True when text has no control, bidirectional-override or isolate characters.';

-- An instant the database stores and gives back as RFC 3339: a four-digit
-- year in UTC. Rows from before this migration are left as they are (NOT VALID).
create or replace function app.is_rfc3339_instant(value timestamptz) returns boolean
language sql immutable parallel safe
set search_path = pg_catalog
as $$
  select value >= '1970-01-01T00:00:00Z' and value < '9999-01-01T00:00:00Z';
$$;
comment on function app.is_rfc3339_instant(timestamptz) is
  'True for instants from 1970 up to the start of 9999 (UTC), which leave the database as RFC 3339.';

alter table app.shows drop constraint if exists shows_printable;
alter table app.shows add constraint shows_printable
  check (app.is_printable(name) and app.is_printable(venue)) not valid;
alter table app.shows drop constraint if exists shows_instants;
alter table app.shows add constraint shows_instants
  check (app.is_rfc3339_instant(starts_at) and app.is_rfc3339_instant(sales_end_at)
         and (sales_start_at is null or (app.is_rfc3339_instant(sales_start_at) and sales_start_at < sales_end_at))) not valid;
alter table app.show_stops drop constraint if exists show_stops_printable;
alter table app.show_stops add constraint show_stops_printable
  check (app.is_printable(name) and app.is_rfc3339_instant(departs_at)) not valid;
alter table app.bookings drop constraint if exists bookings_printable;
alter table app.bookings add constraint bookings_printable
  check (app.is_printable(customer_name) and app.is_printable(customer_email)
         and (cancel_reason is null or app.is_printable(cancel_reason))
         and (payment_reference is null or app.is_printable(payment_reference))) not valid;

create or replace function app.booking_secret(idempotency_key text) returns text
language plpgsql volatile
set search_path = pg_catalog
as $$
-- A booking's secret: 256 random bits, or, for a request with an
-- Idempotency-Key, an HMAC of the key under the service's key, so that a
-- replay of the same request answers the same secret while only its hash
-- is stored. Whoever knows the key and the request already is the booker.
declare
  v_bytes bytea;
begin
  if idempotency_key is null then
    v_bytes := public.gen_random_bytes(32);
  else
    v_bytes := public.hmac(convert_to('booking ' || idempotency_key, 'UTF8'),
                           (select k.key from app.keys k where k.name = 'booking-secret'), 'sha256');
  end if;
  return rtrim(translate(encode(v_bytes, 'base64'), '+/', '-_'), '=');
end;
$$;
comment on function app.booking_secret(text) is
  'A new booking''s secret: random, or derived from its Idempotency-Key so a replay can answer it again.';

create or replace function app.secret_hash(secret text) returns bytea
language sql immutable parallel safe
set search_path = pg_catalog
as $$
  -- A secret of 256 random bits needs no slow hash: there is nothing to guess.
  select sha256(convert_to(secret, 'UTF8'));
$$;
comment on function app.secret_hash(text) is 'The stored form of a booking secret.';

create or replace function app.client_key(address text) returns text
language sql stable
set search_path = pg_catalog
as $$
  -- Keyed, so a stored key does not give back the address it came from.
  select encode(substring(public.hmac(convert_to(address, 'UTF8'), k.key, 'sha256') from 1 for 16), 'hex')
  from app.keys k where k.name = 'client-key';
$$;
comment on function app.client_key(text) is 'An opaque, stable key for a client address.';

create or replace function app.authorize_booking(booking_id uuid, secret text) returns void
language plpgsql stable
set search_path = pg_catalog
as $$
-- A null secret is a trusted caller: the admin, or SQL run by the operator.
-- A wrong secret and a missing booking are the same answer, so a stranger
-- cannot tell whether a booking id exists. The comparison is of SHA-256
-- digests: how long it takes tells nothing about the secret.
begin
  if secret is null then
    return;
  end if;
  perform 1 from app.bookings b
  where b.id = authorize_booking.booking_id and b.secret_hash = app.secret_hash(secret);
  if not found then
    perform app.raise_problem('BKGNF', format('There is no booking %s', booking_id));
  end if;
end;
$$;
comment on function app.authorize_booking(uuid, text) is
  'Raises BKGNF unless the secret is the booking''s (null: a trusted caller).';

drop function if exists app.get_booking(uuid, text);
create function app.get_booking(booking_id uuid, secret text default null) returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select app.booking_json(b.id) from app.bookings b
  where b.id = get_booking.booking_id
    and (secret is null or b.secret_hash = app.secret_hash(secret));
$$;
comment on function app.get_booking(uuid, text) is
  'A booking as JSON, when the secret is its own (null: a trusted caller); otherwise null.';

-- Sales windows, in the show's JSON.
create or replace function app.show_json(s app.shows) returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select jsonb_build_object(
    'id', s.id,
    'kind', s.kind,
    'name', s.name,
    'venue', s.venue,
    'startsAt', s.starts_at,
    'salesEndAt', s.sales_end_at,
    'currency', s.currency,
    'seatCount', s.seat_count,
    'createdAt', s.created_at
  ) || case when s.sales_start_at is not null then jsonb_build_object('salesStartAt', s.sales_start_at) else '{}' end
    || case when s.kind = 'trip' then jsonb_build_object('stops', coalesce(app.stops_json(s.id), '[]')) else '{}' end;
$$;
create or replace function app.create_show(spec jsonb) returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Why one function: a show and all its seats appear together or not at all,
-- and the layout rules live in one place whoever calls it.
declare
  v_show app.shows;
  v_seat_count bigint;
  v_dup text;
  v_stops int := coalesce(jsonb_array_length(spec->'stops'), 0);
  v_starts_at timestamptz := coalesce((spec->>'startsAt')::timestamptz, (spec->'stops'->0->>'departsAt')::timestamptz);
  v_sales_start timestamptz := (spec->>'salesStartAt')::timestamptz;
  v_sales_end timestamptz := coalesce((spec->>'salesEndAt')::timestamptz, v_starts_at);
  v_field text;
begin
  -- Instants the database can give back as RFC 3339 (a four-digit UTC year):
  -- 9999-12-31T23:30:00-05:00 is valid RFC 3339 but falls in the year 10000.
  select f.name into v_field
  from (values ('body.startsAt', (spec->>'startsAt')::timestamptz),
               ('body.salesStartAt', v_sales_start),
               ('body.salesEndAt', (spec->>'salesEndAt')::timestamptz)) f(name, at)
  where f.at is not null and not app.is_rfc3339_instant(f.at)
  union all
  select format('body.stops.%s.departsAt', i - 1)
  from jsonb_array_elements(spec->'stops') with ordinality as s(st, i)
  where not app.is_rfc3339_instant((st->>'departsAt')::timestamptz)
  limit 1;
  if found then
    perform app.raise_problem('BKREQ', format('%s must be from 1970 up to the start of 9999, in UTC', v_field),
      jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
        'name', v_field, 'reason', 'must be from 1970-01-01T00:00:00Z up to 9999-01-01T00:00:00Z'))));
  end if;
  if v_sales_start >= v_sales_end then
    perform app.raise_problem('BKREQ', 'Sales must open before they close',
      jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
        'name', 'body.salesStartAt', 'reason', 'must be before salesEndAt (by default the start of the show)'))));
  end if;
  -- A show is one leg with no stops; a trip has a leg between each pair of
  -- consecutive stops, in order of departure.
  if spec->>'kind' = 'show' and v_stops > 0 then
    perform app.raise_problem('STOPX', 'A show has no stops; give stops for a trip');
  end if;
  if spec->>'kind' = 'trip' and v_stops < 2 then
    perform app.raise_problem('STOPX', format('A trip needs at least two stops; this one has %s', v_stops));
  end if;
  if v_starts_at is null then
    perform app.raise_problem('BKREQ', 'A show needs startsAt',
      jsonb_build_object('errors', jsonb_build_array(jsonb_build_object('name', 'body.startsAt', 'reason', 'is required for a show'))));
  end if;
  select st->>'name' into v_dup
  from jsonb_array_elements(spec->'stops') st
  group by st->>'name' having count(*) > 1 limit 1;
  if found then
    perform app.raise_problem('STOPX', format('Stop %s is listed twice', v_dup));
  end if;
  select b.st->>'name' into v_dup
  from jsonb_array_elements(spec->'stops') with ordinality as a(st, i)
  join jsonb_array_elements(spec->'stops') with ordinality as b(st, i) on b.i = a.i + 1
  where (b.st->>'departsAt')::timestamptz <= (a.st->>'departsAt')::timestamptz
  limit 1;
  if found then
    perform app.raise_problem('STOPX', format('Stop %s must be later than the stop before it', v_dup));
  end if;
  if v_stops > 0 and v_starts_at <> (spec->'stops'->0->>'departsAt')::timestamptz then
    perform app.raise_problem('STOPX', 'A trip starts when it leaves its first stop: startsAt must equal the first departsAt');
  end if;

  select c->>'code' into v_dup
  from jsonb_array_elements(spec->'categories') c
  group by c->>'code' having count(*) > 1 limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('Category %s is defined twice', v_dup),
      jsonb_build_object('field', 'categories'));
  end if;

  select sec->>'name' into v_dup
  from jsonb_array_elements(spec->'sections') sec
  group by sec->>'name' having count(*) > 1 limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('Section %s is defined twice', v_dup),
      jsonb_build_object('field', 'sections'));
  end if;

  select format('%s row %s', sec->>'name', r->>'label') into v_dup
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r
  group by sec->>'name', r->>'label' having count(*) > 1 limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('Row %s is defined twice', v_dup),
      jsonb_build_object('field', 'sections'));
  end if;

  select format('%s row %s uses category %s', sec->>'name', r->>'label', r->>'category') into v_dup
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r
  where not exists (
    select 1 from jsonb_array_elements(spec->'categories') c where c->>'code' = r->>'category')
  limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('%s, which is not defined', v_dup),
      jsonb_build_object('field', 'sections'));
  end if;

  select format('%s row %s has no seat %s', sec->>'name', r->>'label', b) into v_dup
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r,
       jsonb_array_elements_text(coalesce(r->'blocked', '[]')) b
  where b::int > (r->>'seats')::int
  limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('%s to block', v_dup), jsonb_build_object('field', 'sections'));
  end if;

  select sum((r->>'seats')::int) into v_seat_count
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r;
  if coalesce(v_seat_count, 0) not between 1 and 100000 then
    perform app.raise_problem('LAYOT',
      format('A show has between 1 and 100000 seats; this layout has %s', coalesce(v_seat_count, 0)),
      jsonb_build_object('field', 'sections'));
  end if;

  insert into app.shows (kind, name, venue, starts_at, currency, seat_count, leg_count, sales_start_at, sales_end_at)
  values ((spec->>'kind')::app.show_kind, spec->>'name', spec->>'venue',
          v_starts_at, spec->>'currency', v_seat_count, greatest(v_stops - 1, 1), v_sales_start, v_sales_end)
  returning * into v_show;

  insert into app.show_stops (show_id, position, name, departs_at)
  select v_show.id, i - 1, st->>'name', (st->>'departsAt')::timestamptz
  from jsonb_array_elements(spec->'stops') with ordinality as s(st, i);

  insert into app.seat_categories (show_id, code, price)
  select v_show.id, c->>'code', (c->>'price')::int
  from jsonb_array_elements(spec->'categories') c;

  insert into app.seats (show_id, section, row_label, number, label, category,
                         section_index, row_index, seat_index, for_sale)
  select v_show.id, sec->>'name', r->>'label', n,
         format('%s-%s-%s', sec->>'name', r->>'label', n),
         r->>'category', si - 1, ri - 1, n - 1,
         not coalesce(r->'blocked', '[]') @> to_jsonb(n)
  from jsonb_array_elements(spec->'sections') with ordinality as s1(sec, si),
       jsonb_array_elements(sec->'rows') with ordinality as r1(r, ri),
       generate_series(1, (r->>'seats')::int) as n
  order by si, ri, n;

  -- Fresh statistics before anyone books: planned against stale ones, the
  -- new show looks like a single row and seat lookups walk all its seats.
  -- ANALYZE samples at most 30,000 rows, so this is bounded.
  analyze app.seats;

  return app.show_detail_json(v_show.id);
end;
$$;

comment on function app.create_show(jsonb) is
  'Creates a show or trip with its categories, stops, sales window and every seat of its layout, in one transaction.';

create or replace function app.check_hold_limits(show_id uuid, client_key text, email text, seats int, limits jsonb)
returns void
language plpgsql volatile
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
-- Anti-hoarding: seats one client, and one email, may hold in live holds
-- of a show, and live holds one client may have in all. limits:
-- {"seatsPerClient", "seatsPerEmail", "holdsPerClient"}; 0 or absent: no limit.
--
-- Locks: a transaction-scoped advisory lock per client, then one per
-- (show, email), so two holds of one client cannot both pass the count.
-- They are taken before any seat lock and in that order (client, email,
-- seats, booking rows), so they close no cycle with any other path.
declare
  v_seats_per_client int := nullif((limits->>'seatsPerClient')::int, 0);
  v_seats_per_email int := nullif((limits->>'seatsPerEmail')::int, 0);
  v_holds_per_client int := nullif((limits->>'holdsPerClient')::int, 0);
  v_email text := lower(email);
  v_now timestamptz := clock_timestamp();
  v_held int;
begin
  if client_key is not null and (v_seats_per_client is not null or v_holds_per_client is not null) then
    perform pg_advisory_xact_lock(hashtextextended('hold client ' || client_key, 0));
    if v_holds_per_client is not null then
      select count(*) into v_held from app.bookings b
      where b.client_key = check_hold_limits.client_key
        and b.status = 'pending' and b.expires_at is not null and b.expires_at > v_now;
      if v_held + 1 > v_holds_per_client then
        perform app.raise_problem('HOLDL',
          format('One client may have at most %s live holds; this one has %s', v_holds_per_client, v_held),
          jsonb_build_object('limitScope', 'holds-per-client', 'limit', v_holds_per_client, 'held', v_held));
      end if;
    end if;
    if v_seats_per_client is not null then
      select count(*) into v_held from app.bookings b
      join app.booking_seats bs on bs.booking_id = b.id and bs.active
      where b.client_key = check_hold_limits.client_key and b.show_id = check_hold_limits.show_id
        and b.status = 'pending' and b.expires_at is not null and b.expires_at > v_now;
      if v_held + seats > v_seats_per_client then
        perform app.raise_problem('HOLDL',
          format('One client may hold at most %s seats of this show at once; it holds %s', v_seats_per_client, v_held),
          jsonb_build_object('limitScope', 'seats-per-client', 'limit', v_seats_per_client, 'held', v_held));
      end if;
    end if;
  end if;
  if v_email is not null and v_seats_per_email is not null then
    perform pg_advisory_xact_lock(hashtextextended('hold email ' || show_id || ' ' || v_email, 0));
    select count(*) into v_held from app.bookings b
    join app.booking_seats bs on bs.booking_id = b.id and bs.active
    where b.show_id = check_hold_limits.show_id and lower(b.customer_email) = v_email
      and b.status = 'pending' and b.expires_at is not null and b.expires_at > v_now;
    if v_held + seats > v_seats_per_email then
      perform app.raise_problem('HOLDL',
        format('One customer email may hold at most %s seats of this show at once; it holds %s', v_seats_per_email, v_held),
        jsonb_build_object('limitScope', 'seats-per-email', 'limit', v_seats_per_email, 'held', v_held));
    end if;
  end if;
end;
$$;
comment on function app.check_hold_limits(uuid, text, text, int, jsonb) is
  'Raises HOLDL when a new hold would pass a client''s or an email''s share of a show.';

drop function if exists app.create_booking(jsonb, text, int, int, int);
drop function if exists app.create_booking(jsonb, text, int, int, int, text, jsonb);
create function app.create_booking(
  request jsonb, idempotency_key text default null, max_seats int default 10,
  hold_default_seconds int default 600, hold_max_seconds int default 1800,
  client_address text default null, hold_limits jsonb default '{}'
) returns jsonb
language plpgsql volatile
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
-- Why one function: the whole booking, from the Pending record to its
-- outcome, is one call and one transaction, so a client makes one round
-- trip, no interleaving of two bookers can see a half-done booking, and a
-- retry with the same Idempotency-Key finds the committed outcome.
--
-- Returns {"booking": <booking>, "replayed": <bool>}; the booking carries its
-- secret, which is stored only as a hash. A booking whose seats
-- were not available is recorded as failed and returned, not raised.
declare
  v_replay jsonb;
  v_show_id uuid := (request->>'showId')::uuid;
  v_seat_ids bigint[] := array(select jsonb_array_elements_text(request->'seatIds')::bigint);
  v_seat_labels text[] := array(select jsonb_array_elements_text(request->'seatLabels'));
  v_quantity int := (request->>'quantity')::int;
  v_hold boolean := coalesce((request->>'hold')::boolean, false);
  v_hold_seconds int := coalesce((request->>'holdSeconds')::int, hold_default_seconds);
  v_legs int4range;
  v_requested int;
  v_booking_id uuid;
  v_seats bigint[];
  v_taken bigint[];
  v_now timestamptz;
  v_held_until timestamptz;
  v_reason text;
  v_result jsonb;
  v_secret text;
  v_window record;
  v_client_key text;
begin
  if (request ? 'seatIds')::int + (request ? 'seatLabels')::int + (request ? 'quantity')::int <> 1 then
    perform app.raise_problem('BKREQ', 'Name the seats by seatIds or by seatLabels, or ask for a quantity: exactly one of them');
  end if;
  if v_quantity is null and (request ?| array['section', 'category', 'maxPrice', 'allowSeparate']) then
    perform app.raise_problem('BKREQ', 'section, category, maxPrice and allowSeparate go with quantity');
  end if;
  v_requested := coalesce(v_quantity, nullif(cardinality(v_seat_ids), 0), cardinality(v_seat_labels));
  if v_requested < 1 then
    perform app.raise_problem('BKREQ', 'A booking needs at least one seat');
  end if;
  if v_requested > max_seats then
    perform app.raise_problem('SEATN', format('A booking may have at most %s seats', max_seats),
      jsonb_build_object('maxSeats', max_seats));
  end if;
  if v_quantity is null and v_requested <> (select count(distinct x) from unnest(v_seat_ids) x)
                                           + (select count(distinct x) from unnest(v_seat_labels) x) then
    perform app.raise_problem('SEATD', 'The same seat is named more than once');
  end if;
  if request ? 'holdSeconds' and not v_hold then
    perform app.raise_problem('BKREQ', 'holdSeconds goes with "hold": true');
  end if;
  if v_hold and v_hold_seconds not between 1 and hold_max_seconds then
    perform app.raise_problem('BKREQ', format('A hold lasts between 1 and %s seconds', hold_max_seconds),
      jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
        'name', 'body.holdSeconds', 'reason', format('must be at most %s', hold_max_seconds)))));
  end if;

  v_replay := app.idempotency_begin(idempotency_key, 'create-booking', request);
  v_secret := app.booking_secret(idempotency_key);
  if v_replay is not null then
    return jsonb_build_object('booking', v_replay || jsonb_build_object('secret', v_secret), 'replayed', true);
  end if;

  -- Sales are open from salesStartAt (if any) until salesEndAt, by default
  -- the start of the show. After the replay: a retry of a booking made in
  -- time still answers what it did.
  select s.sales_start_at, s.sales_end_at into v_window from app.shows s where s.id = v_show_id;
  if found and (clock_timestamp() < v_window.sales_start_at or clock_timestamp() >= v_window.sales_end_at) then
    perform app.raise_problem('SALES',
      case when clock_timestamp() < v_window.sales_start_at then format('Sales open at %s', v_window.sales_start_at)
           else format('Sales closed at %s', v_window.sales_end_at) end,
      jsonb_strip_nulls(jsonb_build_object('salesStartAt', v_window.sales_start_at, 'salesEndAt', v_window.sales_end_at)));
  end if;

  -- The legs this booking travels: the whole trip unless it names stops.
  v_legs := app.leg_range(v_show_id, request->>'fromStop', request->>'toStop');
  if v_legs is null then
    perform app.raise_problem('SHWNF', format('There is no show %s', v_show_id),
      jsonb_build_object('showId', v_show_id));
  end if;

  -- Before any seat lock: the limits' own locks come first in the lock order.
  if v_hold then
    v_client_key := app.client_key(client_address);
    perform app.check_hold_limits(v_show_id, v_client_key, request->'customer'->>'email', v_requested, hold_limits);
  end if;

  insert into app.bookings (show_id, status, legs, customer_name, customer_email, secret_hash, client_key)
  values (v_show_id, 'pending', v_legs, request->'customer'->>'name', request->'customer'->>'email',
          app.secret_hash(v_secret), v_client_key)
  returning id into v_booking_id;

  if v_quantity is null then
    -- Lock the named seat rows in ascending id order: bookings of
    -- overlapping seats queue on the first seat they share and can never
    -- deadlock. FOR NO KEY UPDATE conflicts with itself but not with the
    -- KEY SHARE locks that booking_seats' foreign key takes.
    --
    -- Each lookup has one index that fits it exactly (the primary key, or
    -- (show_id, label)), so the plan stays a few index probes even right
    -- after a big show is created, before statistics catch up. Seats named
    -- by id are checked against the show after locking: a seat of another
    -- show is a request error, and the rollback releases its lock.
    if cardinality(v_seat_ids) > 0 then
      select array_agg(l.id order by l.id) filter (where l.show_id = v_show_id) into v_seats
      from (
        select s.id, s.show_id from app.seats s
        where s.id = any(v_seat_ids)
        order by s.id
        for no key update of s
      ) l;
    else
      select array_agg(l.id order by l.id) into v_seats
      from (
        select s.id from app.seats s
        where s.show_id = v_show_id and s.label = any(v_seat_labels)
        order by s.id
        for no key update of s
      ) l;
    end if;
    if coalesce(cardinality(v_seats), 0) <> v_requested then
      perform app.raise_problem('SEATX', 'Some seats do not exist in this show',
        jsonb_build_object('unknownSeats', coalesce(
          (select jsonb_agg(x order by x) from unnest(v_seat_ids) x
            where not exists (select 1 from app.seats s where s.id = x and s.show_id = v_show_id)),
          (select jsonb_agg(x order by x) from unnest(v_seat_labels) x
            where not exists (select 1 from app.seats s where s.label = x and s.show_id = v_show_id)))));
    end if;
  else
    v_seats := app.pick_best_seats(v_show_id, v_quantity, request->>'section', request->>'category',
      (request->>'maxPrice')::bigint, coalesce((request->>'allowSeparate')::boolean, false), v_legs);
    if v_seats is null then
      v_reason := 'not-enough-seats';
    end if;
  end if;

  -- After the locks, so a hold's clock starts when its seats are held.
  v_now := clock_timestamp();
  v_held_until := case when v_hold then v_now + make_interval(secs => v_hold_seconds) end;
  if v_seats is not null then
    v_taken := app.claim_seats(v_booking_id, v_show_id, v_seats, v_legs, v_held_until, v_now);
    if v_taken is not null then
      v_reason := 'seats-unavailable';
    end if;
  end if;

  if v_reason is not null then
    update app.bookings b set status = 'failed', failure_reason = v_reason, updated_at = v_now
    where b.id = v_booking_id;
  else
    update app.bookings b
    set status = case when v_hold then 'pending' else 'confirmed' end::app.booking_status,
        expires_at = v_held_until,
        confirmed_at = case when v_hold then null else v_now end,
        total_price = (select sum(bs.price) from app.booking_seats bs where bs.booking_id = v_booking_id),
        updated_at = v_now
    where b.id = v_booking_id;
  end if;

  v_result := app.booking_json(v_booking_id);
  -- The stored replay never holds the secret: a replay derives it again.
  perform app.idempotency_end(idempotency_key, v_result);
  return jsonb_build_object('booking', v_result || jsonb_build_object('secret', v_secret), 'replayed', false);
end;
$$;
comment on function app.create_booking(jsonb, text, int, int, int, text, jsonb) is
  'Book seats: one call, one transaction; Pending, Confirmed or Failed atomically. Returns {booking (with its secret), replayed}.';

drop function if exists app.confirm_booking(uuid, jsonb, text);
drop function if exists app.confirm_booking(uuid, jsonb, text, text);
create function app.confirm_booking(booking_id uuid, request jsonb default '{}', idempotency_key text default null, secret text default null)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
-- Access first: a stranger learns nothing, not even from a replay.
declare
  v_replay jsonb;
  v_booking app.bookings;
  v_now timestamptz;
  v_result jsonb;
begin
  perform app.authorize_booking(booking_id, secret);
  v_replay := app.idempotency_begin(idempotency_key, 'confirm ' || booking_id, request);
  if v_replay is not null then
    return jsonb_build_object('booking', v_replay, 'replayed', true);
  end if;
  v_booking := app.lock_booking(booking_id);
  v_now := clock_timestamp();
  -- Under the seat locks: a hold past its expiry can never be confirmed,
  -- and a booker may already have taken its seats.
  if v_booking.status = 'pending' and v_booking.expires_at <= v_now then
    perform app.raise_problem('BKSTA', format('The hold expired at %s', v_booking.expires_at),
      jsonb_build_object('bookingStatus', 'expired'));
  end if;
  if v_booking.status <> 'pending' then
    perform app.raise_problem('BKSTA', format('The booking is %s; only a pending booking can be confirmed', v_booking.status),
      jsonb_build_object('bookingStatus', v_booking.status));
  end if;
  update app.bookings b
  set status = 'confirmed', confirmed_at = v_now, updated_at = v_now,
      payment_reference = request->>'paymentReference'
  where b.id = confirm_booking.booking_id;
  v_result := app.booking_json(booking_id);
  perform app.idempotency_end(idempotency_key, v_result);
  return jsonb_build_object('booking', v_result, 'replayed', false);
end;
$$;
comment on function app.confirm_booking(uuid, jsonb, text, text) is
  'Confirm a pending hold, with the booking''s secret (null: a trusted caller). Returns {booking, replayed}.';

drop function if exists app.cancel_booking(uuid, jsonb, text);
drop function if exists app.cancel_booking(uuid, jsonb, text, text);
create function app.cancel_booking(booking_id uuid, request jsonb default '{}', idempotency_key text default null, secret text default null)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
-- Access first: a stranger learns nothing, not even from a replay.
declare
  v_replay jsonb;
  v_booking app.bookings;
  v_now timestamptz;
  v_result jsonb;
begin
  perform app.authorize_booking(booking_id, secret);
  v_replay := app.idempotency_begin(idempotency_key, 'cancel ' || booking_id, request);
  if v_replay is not null then
    return jsonb_build_object('booking', v_replay, 'replayed', true);
  end if;
  v_booking := app.lock_booking(booking_id);
  v_now := clock_timestamp();
  if v_booking.status = 'pending' and v_booking.expires_at <= v_now then
    perform app.raise_problem('BKSTA', format('The hold expired at %s', v_booking.expires_at),
      jsonb_build_object('bookingStatus', 'expired'));
  end if;
  if v_booking.status not in ('pending', 'confirmed') then
    perform app.raise_problem('BKSTA', format('The booking is %s; only a pending or confirmed booking can be cancelled', v_booking.status),
      jsonb_build_object('bookingStatus', v_booking.status));
  end if;
  -- The release trigger frees the seats in this same transaction.
  update app.bookings b
  set status = 'cancelled', cancelled_at = v_now, updated_at = v_now,
      cancel_reason = coalesce(request->>'reason', 'cancelled by the customer')
  where b.id = cancel_booking.booking_id;
  v_result := app.booking_json(booking_id);
  perform app.idempotency_end(idempotency_key, v_result);
  return jsonb_build_object('booking', v_result, 'replayed', false);
end;
$$;
comment on function app.cancel_booking(uuid, jsonb, text, text) is
  'Cancel a pending or confirmed booking, with the booking''s secret (null: a trusted caller). Returns {booking, replayed}.';

-- Public events name seats only; the admin history adds the booking.
drop function if exists app.show_events(uuid, bigint, int);
drop function if exists app.show_events(uuid, bigint, int, boolean);
create function app.show_events(show_id uuid, after bigint default 0, page_size int default 100, with_bookings boolean default false)
returns json
language sql stable
set search_path = pg_catalog
as $$
  -- Sequenced events of a show after a position, oldest first.
  select coalesce(json_agg(
      json_build_object('id', e.position, 'showId', e.show_id, 'type', e.type)::jsonb
      || case when with_bookings then jsonb_build_object('bookingId', e.booking_id) else '{}' end
      || jsonb_build_object(
        'seats', (select jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id)
                  from app.seats s where s.id = any(e.seat_ids)),
        'fromStop', (select st.name from app.show_stops st where st.show_id = e.show_id and st.position = lower(e.legs)),
        'toStop', (select st.name from app.show_stops st where st.show_id = e.show_id and st.position = upper(e.legs)),
        'at', e.at)
      order by e.position), '[]')
  from (
    select * from app.seat_events e
    where e.show_id = show_events.show_id and e.position > after
    order by e.position
    limit page_size
  ) e;
$$;
comment on function app.show_events(uuid, bigint, int, boolean) is
  'A page of a show''s sequenced seat events after a position, as JSON; booking ids only with with_bookings (the admin history).';

create or replace function app.seat_map_version(show_id uuid) returns text
language sql stable
set search_path = pg_catalog
as $$
  -- Changes by the time a change of the map is committed, not only once the
  -- sequencer has given its event a position: the newest position, the
  -- committed events still waiting for one, and holds that have lapsed but
  -- are not yet recorded as expired. The triple never repeats: the two
  -- counts fall only as the position rises.
  select coalesce((select max(e.position) from app.seat_events e where e.show_id = seat_map_version.show_id), 0)
         || '-' ||
         (select count(*) from app.seat_events e where e.position is null and e.show_id = seat_map_version.show_id)
         || '-' ||
         (select count(*) from app.bookings b
          where b.status = 'pending' and b.expires_at <= clock_timestamp() and b.show_id = seat_map_version.show_id);
$$;
comment on function app.seat_map_version(uuid) is 'A version of a show''s seat map, for its ETag; it changes when a change commits.';

create or replace function app.list_show_bookings(
  show_id uuid, status app.booking_status default null, after_created_at timestamptz default null,
  after_id uuid default null, page_size int default 50
) returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  -- Filtered by the status each booking shows: a hold past its expiry is
  -- expired from that instant, before the sweep records it.
  with page as (
    select b.id, b.created_at
    from app.bookings b
    where b.show_id = list_show_bookings.show_id
      and (list_show_bookings.status is null
           or (case when b.status = 'pending' and b.expires_at <= clock_timestamp() then 'expired'
                    else b.status end) = list_show_bookings.status)
      and (after_created_at is null or (b.created_at, b.id) > (after_created_at, after_id))
    order by b.created_at, b.id
    limit page_size + 1
  ), numbered as (
    select p.*, row_number() over (order by p.created_at, p.id) as n from page p
  )
  select jsonb_build_object(
    'items', coalesce(jsonb_agg(app.booking_json(x.id) order by x.n) filter (where x.n <= page_size), '[]'),
    'next', case when count(*) > page_size then (
      select jsonb_build_object('at', y.created_at, 'id', y.id) from numbered y where y.n = page_size) end)
  from numbered x
  having exists (select 1 from app.shows s where s.id = list_show_bookings.show_id);
$$;

--! Previous: sha1:a88f3fa3726d0b81621a58583dbbb2955b273217
--! Hash: sha1:c9ca653eba1e0990f20cd4e80fc0906f4cb6c53b
--! Message: General admission: standing areas sold by capacity, their units rows of seats taken with SKIP LOCKED

-- General admission: standing areas sold by capacity, beside seated sections.
-- An area's capacity is pre-created as rows of app.seats (standing units), so
-- the exclusion constraint over (seat, legs), holds, expiry, confirm, cancel,
-- idempotency, events and the admin listing apply to them unchanged. A
-- booking takes N free units of an area with SKIP LOCKED, so bookings of one
-- area spread over its rows instead of queueing on one counter.
-- Idempotent while it is current.sql.

create table if not exists app.areas (
  show_id uuid not null references app.shows (id) on delete cascade,
  name text not null,
  category text not null,
  capacity int not null check (capacity between 1 and 100000),
  position int not null check (position >= 0),
  -- The range of its units' seat ids, for a random starting point.
  first_unit_id bigint not null,
  last_unit_id bigint not null,
  primary key (show_id, name),
  foreign key (show_id, category) references app.seat_categories (show_id, code),
  constraint areas_json_safe check (name ~ '^[A-Za-z0-9 ._'']{1,40}$')
);
comment on table app.areas is 'Standing areas of a show, sold by capacity: each unit of capacity is a standing row of app.seats.';

-- A standing concert may have no seats at all.
alter table app.shows drop constraint if exists shows_seat_count_check;
alter table app.shows add constraint shows_seat_count_check check (seat_count between 0 and 100000);

alter table app.seats add column if not exists standing boolean not null default false;
alter table app.seats alter column row_label drop not null;
comment on column app.seats.standing is 'A unit of a standing area''s capacity (section is the area''s name; no row), not a seat.';
-- A booking of an area reads its free units from a random starting id.
create index if not exists seats_area_units_idx on app.seats (show_id, section, id) where standing;

-- A failed booking's areas, as it asked for them, and those without room.
alter table app.bookings add column if not exists requested_areas jsonb;
alter table app.bookings add column if not exists unavailable_areas text[];
comment on column app.bookings.requested_areas is 'A failed booking''s areas as it asked for them: [{name, quantity}].';
comment on column app.bookings.unavailable_areas is 'A failed booking''s areas that had not enough room left.';

create or replace function app.create_show(spec jsonb) returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Why one function: a show and all its seats and standing units appear
-- together or not at all, and the layout rules live in one place whoever calls it.
declare
  v_show app.shows;
  v_seat_count bigint;
  v_unit_count bigint;
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

  select coalesce(sum((r->>'seats')::int), 0) into v_seat_count
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r;
  select sum((a->>'capacity')::int) into v_unit_count from jsonb_array_elements(coalesce(spec->'areas', '[]')) a;
  if v_seat_count > 100000 or (v_seat_count < 1 and v_unit_count is null) then
    perform app.raise_problem('LAYOT',
      format('A show has between 1 and 100000 seats, or a standing area; this layout has %s seats', v_seat_count),
      jsonb_build_object('field', 'sections'));
  end if;

  -- Areas share the sections' names: a booking, the seat map and the event
  -- stream name an area as a seat names its section.
  select a->>'name' into v_dup
  from jsonb_array_elements(coalesce(spec->'areas', '[]')) a
  group by a->>'name' having count(*) > 1 limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('Area %s is defined twice', v_dup), jsonb_build_object('field', 'areas'));
  end if;
  select a->>'name' into v_dup
  from jsonb_array_elements(coalesce(spec->'areas', '[]')) a
  join jsonb_array_elements(spec->'sections') sec on sec->>'name' = a->>'name'
  limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('%s is both a section and an area', v_dup), jsonb_build_object('field', 'areas'));
  end if;
  select format('Area %s uses category %s', a->>'name', a->>'category') into v_dup
  from jsonb_array_elements(coalesce(spec->'areas', '[]')) a
  where not exists (select 1 from jsonb_array_elements(spec->'categories') c where c->>'code' = a->>'category')
  limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('%s, which is not defined', v_dup), jsonb_build_object('field', 'areas'));
  end if;
  if coalesce(v_unit_count, 0) > 100000 then
    perform app.raise_problem('LAYOT', format('Areas hold at most 100000 in all; these hold %s', v_unit_count),
      jsonb_build_object('field', 'areas'));
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

  -- Standing units after the seats, so every unit's id is above every seat's
  -- of the show: locking named seats before units is ascending id order.
  -- Labels "Area-n" have one dash, seat labels two (names have none).
  insert into app.seats (show_id, section, row_label, number, label, category,
                         section_index, row_index, seat_index, standing)
  select v_show.id, a->>'name', null, n, format('%s-%s', a->>'name', n), a->>'category',
         coalesce(jsonb_array_length(spec->'sections'), 0) + ai - 1, 0, n - 1, true
  from jsonb_array_elements(coalesce(spec->'areas', '[]')) with ordinality as a1(a, ai),
       generate_series(1, (a->>'capacity')::int) as n
  order by ai, n;
  insert into app.areas (show_id, name, category, capacity, position, first_unit_id, last_unit_id)
  select v_show.id, a->>'name', a->>'category', (a->>'capacity')::int, ai - 1, u.first_id, u.last_id
  from jsonb_array_elements(coalesce(spec->'areas', '[]')) with ordinality as a1(a, ai)
  cross join lateral (select min(s.id) as first_id, max(s.id) as last_id from app.seats s
                      where s.show_id = v_show.id and s.section = a->>'name' and s.standing) u;
  -- A booking counts an area's taken units by this range of ids: within the
  -- show it must hold the area's units and nothing else.
  if exists (select 1 from app.areas a where a.show_id = v_show.id and a.last_unit_id - a.first_unit_id + 1 <> a.capacity) then
    raise exception 'the units of an area of show % did not get consecutive ids', v_show.id;
  end if;

  -- Fresh statistics before anyone books: planned against stale ones, the
  -- new show looks like a single row and seat lookups walk all its seats.
  -- ANALYZE samples at most 30,000 rows, so this is bounded.
  analyze app.seats;

  return app.show_detail_json(v_show.id);
end;
$$;
comment on function app.create_show(jsonb) is
  'Creates a show or trip with its categories, stops, sales window, every seat of its layout and every unit of its standing areas, in one transaction.';

create or replace function app.show_detail_json(show_id uuid) returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select app.show_json(s) || jsonb_build_object(
    'categories', (
      select jsonb_agg(jsonb_build_object('code', c.code, 'price', c.price) order by c.code)
      from app.seat_categories c where c.show_id = s.id),
    'sections', (
      select coalesce(jsonb_agg(jsonb_build_object('name', sec.section, 'rows', sec.rows) order by sec.section_index), '[]')
      from (
        select r.section, r.section_index,
               jsonb_agg(jsonb_build_object('label', r.row_label, 'category', r.category, 'seats', r.seats)
                         order by r.row_index) as rows
        from (
          select st.section, st.section_index, st.row_label, st.row_index,
                 min(st.category) as category, count(*) as seats
          from app.seats st where st.show_id = s.id and not st.standing
          group by st.section, st.section_index, st.row_label, st.row_index
        ) r
        group by r.section, r.section_index
      ) sec))
  || coalesce((
    select jsonb_build_object('areas', jsonb_agg(jsonb_build_object('name', a.name, 'category', a.category, 'capacity', a.capacity)
                                                 order by a.position))
    from app.areas a where a.show_id = s.id having count(*) > 0), '{}')
  from app.shows s
  where s.id = show_detail_json.show_id;
$$;
comment on function app.show_detail_json(uuid) is 'A show with its categories, seat layout and standing areas; null when there is no such show.';

-- Best available picks seats, never standing units.
create or replace function app.seat_blocks(show_id uuid, quantity integer, section text, category text, max_price bigint,
                                           legs int4range, at timestamptz, max_rows integer)
returns table(seat_ids bigint[], orphan boolean, distance double precision, section_index integer)
language plpgsql stable
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
begin
  return query
  -- Every run of `quantity` adjacent free seats in one row (in the first
  -- max_rows rows of each section, when given), best first:
  -- blocks that leave no single orphan seat beside them, then earlier
  -- sections, then nearest the front-centre of the section.
  with row_seats as (
    select s.id, s.section_index, s.row_index, s.seat_index, s.for_sale, s.category, c.price,
           max(s.seat_index) over (partition by s.section_index, s.row_index) as last_index
    from app.seats s
    join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
    where s.show_id = seat_blocks.show_id and not s.standing
      and (seat_blocks.section is null or s.section = seat_blocks.section)
      and (max_rows is null or s.row_index < max_rows)
  ), taken as materialized (
    -- The show's taken seats, once.
    select bs.seat_id from app.booking_seats bs
    where bs.show_id = seat_blocks.show_id and bs.active and bs.legs && seat_blocks.legs
      and (bs.held_until is null or bs.held_until > seat_blocks.at)
  ), free as (
    select r.*, r.seat_index - row_number() over (partition by r.section_index, r.row_index order by r.seat_index) as run
    from row_seats r
    where r.for_sale
      and (seat_blocks.category is null or r.category = seat_blocks.category)
      and (seat_blocks.max_price is null or r.price <= seat_blocks.max_price)
      and r.id not in (select t.seat_id from taken t)
  ), runs as (
    select f.*, min(f.seat_index) over w as run_start, max(f.seat_index) over w as run_end
    from free f
    window w as (partition by f.section_index, f.row_index, f.run)
  ), blocks as (
    select r.section_index, r.row_index, r.seat_index as first_index, r.run_start, r.run_end, r.last_index,
           array_agg(r.id) over (partition by r.section_index, r.row_index, r.run order by r.seat_index
                                 rows between current row and seat_blocks.quantity - 1 following) as following
    from runs r
  )
  select b.following,
         (b.first_index - b.run_start = 1 or b.run_end - (b.first_index + seat_blocks.quantity - 1) = 1),
         sqrt(power(b.row_index, 2)
              + power(b.first_index + (seat_blocks.quantity - 1) / 2.0 - b.last_index / 2.0, 2)),
         b.section_index
  from blocks b
  where cardinality(b.following) = seat_blocks.quantity
  order by 2, b.section_index, 3, b.row_index, b.first_index;
end;
$$;

-- A booking's standing admissions, per area: [{name, category, quantity, price}].
create or replace function app.booking_areas_json(booking_id uuid) returns jsonb
language plpgsql stable
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
declare
  v_result jsonb;
begin
  select jsonb_agg(jsonb_build_object('name', x.section, 'category', x.category, 'quantity', x.quantity, 'price', x.price)
                   order by x.section)
  into v_result
  from (select s.section, min(s.category) as category, count(*) as quantity, sum(bs.price) as price
        from app.booking_seats bs join app.seats s on s.id = bs.seat_id
        where bs.booking_id = booking_areas_json.booking_id and s.standing
        group by s.section) x;
  return v_result;
end;
$$;
comment on function app.booking_areas_json(uuid) is 'A booking''s standing admissions per area, as the booking JSON lists them; null when it has none.';

-- Areas as a request names them ([{name, quantity}]), priced over the legs.
create or replace function app.requested_areas_json(show_id uuid, areas jsonb, legs int4range) returns jsonb
language plpgsql stable
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
declare
  v_result jsonb;
begin
  select jsonb_agg(jsonb_build_object('name', a.name, 'category', a.category, 'quantity', (r->>'quantity')::int,
                                      'price', c.price * (upper(legs) - lower(legs)) * (r->>'quantity')::int)
                   order by a.name)
  into v_result
  from jsonb_array_elements(areas) r
  join app.areas a on a.show_id = requested_areas_json.show_id and a.name = r->>'name'
  join app.seat_categories c on c.show_id = a.show_id and c.code = a.category;
  return v_result;
end;
$$;
comment on function app.requested_areas_json(uuid, jsonb, int4range) is 'Requested admissions per area with their price over the legs, as the booking JSON lists them.';

create or replace function app.booking_json(booking_id uuid) returns jsonb
language plpgsql stable
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
declare
  v_result jsonb;
begin
  select jsonb_strip_nulls(jsonb_build_object(
    'id', b.id,
    'showId', b.show_id,
    -- A hold past its expiry reads as expired before the sweep records it.
    'status', case when b.status = 'pending' and b.expires_at <= clock_timestamp() then 'expired'
                   else b.status::text end,
    'customer', jsonb_build_object('name', b.customer_name, 'email', b.customer_email),
    'seats', case when b.requested_seat_ids is not null then app.seats_json(b.requested_seat_ids, b.legs)
                  else coalesce((
                    select jsonb_agg(jsonb_build_object(
                      'id', s.id, 'label', s.label, 'section', s.section, 'row', s.row_label,
                      'number', s.number, 'category', s.category, 'price', bs.price) order by s.id)
                    from app.booking_seats bs join app.seats s on s.id = bs.seat_id
                    where bs.booking_id = b.id and not s.standing), '[]') end,
    'areas', case when b.status = 'failed' then app.requested_areas_json(b.show_id, b.requested_areas, b.legs)
                  else app.booking_areas_json(b.id) end,
    'unavailableSeats', case when b.status = 'failed' then coalesce(
      (select jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id)
       from app.seats s where s.id = any(b.unavailable_seat_ids)),
      -- Failed bookings from before requested_seat_ids kept booking_seats rows.
      (select jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id)
       from app.booking_seats bs join app.seats s on s.id = bs.seat_id
       where bs.booking_id = b.id and bs.unavailable), '[]') end,
    'unavailableAreas', to_jsonb(b.unavailable_areas),
    'fromStop', (select st.name from app.show_stops st where st.show_id = b.show_id and st.position = lower(b.legs)),
    'toStop', (select st.name from app.show_stops st where st.show_id = b.show_id and st.position = upper(b.legs)),
    'totalPrice', b.total_price,
    'currency', sh.currency,
    'failureReason', b.failure_reason,
    'expiresAt', b.expires_at,
    'paymentReference', b.payment_reference,
    'createdAt', b.created_at,
    'updatedAt', b.updated_at,
    'confirmedAt', b.confirmed_at,
    'cancelledAt', b.cancelled_at,
    'cancelReason', b.cancel_reason
  )) into v_result
  from app.bookings b join app.shows sh on sh.id = b.show_id
  where b.id = booking_json.booking_id;
  return v_result;
end;
$$;
comment on function app.booking_json(uuid) is 'A booking as the API''s JSON.';

drop function if exists app.claim_area_units(uuid, text, int, int4range);
create function app.claim_area_units(show_id uuid, area text, quantity int, legs int4range) returns bigint[]
language plpgsql volatile
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
-- Why SKIP LOCKED from a random unit: every booking of an area wants "any N
-- free units". Each takes free units nobody is locking, read upwards from a
-- random unit and then from the area's first, so concurrent bookings lock
-- different rows and none queues behind another. Each unit is a seat row,
-- so the exclusion constraint over (seat, legs) is the backstop: an area can
-- never hold more active bookings than it has units.
--
-- Returns the units, locked, sorted; null when the area has not N free.
-- The caller holds only seat rows of lower ids (named seats, earlier areas'
-- units): every unit's id is above every seat's, so a wait here never
-- closes a cycle with a booker or a canceller (both lock in id order).
declare
  v_area record;
  v_start bigint;
  v_got bigint[];
  v_new bigint[];
  v_taken bigint[];
  v_free bigint[];
  v_wait bigint;
  v_round int;
  v_pass int;
  v_open int;
begin
  select a.first_unit_id, a.last_unit_id, a.capacity into v_area
  from app.areas a where a.show_id = claim_area_units.show_id and a.name = area;
  -- Losers first, without a lock: a unit in a committed booking that no
  -- transaction is changing (xmax 0) is taken whatever happens next. With
  -- fewer than N units left besides those, the area is full: one range read
  -- of the active booking seats' index over the area's unit ids (a show's
  -- units of one area are consecutive ids), no lock, no subtransaction.
  select v_area.capacity - count(distinct bs.seat_id) into v_open
  from app.booking_seats bs
  where bs.seat_id between v_area.first_unit_id and v_area.last_unit_id and bs.active
    and bs.show_id = claim_area_units.show_id and bs.legs && claim_area_units.legs
    and (bs.held_until is null or bs.held_until > clock_timestamp()) and bs.xmax = '0'::xid;
  if v_open < quantity then
    return null;
  end if;
  for v_round in 1..20 loop
    v_got := '{}';
    begin
      v_start := v_area.first_unit_id + floor(random() * (v_area.last_unit_id - v_area.first_unit_id + 1))::bigint;
      for v_pass in 1..2 loop
        loop
          -- Free units over these legs, nobody else locking them; a hold past
          -- its expiry leaves its units free from that instant.
          select array_agg(u.id) into v_new
          from (select s.id from app.seats s
                where s.show_id = claim_area_units.show_id and s.section = area and s.standing
                  and (case when v_pass = 1 then s.id >= v_start else s.id < v_start end)
                  and s.id <> all(v_got)
                  and not exists (
                    select 1 from app.booking_seats bs
                    where bs.seat_id = s.id and bs.active and bs.legs && claim_area_units.legs
                      and (bs.held_until is null or bs.held_until > clock_timestamp()))
                order by s.id
                limit quantity - cardinality(v_got)
                for no key update skip locked) u;
          exit when v_new is null;
          -- Under the locks, a new statement: booked by a transaction that
          -- committed between this statement's snapshot and our lock?
          v_taken := app.taken_seats(v_new, legs, clock_timestamp());
          v_got := v_got || array(select x from unnest(v_new) x where x <> all(coalesce(v_taken, '{}')));
          -- Otherwise read again: the next statement sees those taken.
          exit when v_taken is null or cardinality(v_got) >= quantity;
        end loop;
        exit when cardinality(v_got) >= quantity;
      end loop;
      if cardinality(v_got) >= quantity then
        return (select array_agg(x order by x) from unnest(v_got) x);
      end if;
      -- Not enough: give back what this attempt locked.
      raise exception using errcode = 'BKSKP';
    exception when sqlstate 'BKSKP' then
      null;
    end;
    -- Enough free units, counting those other bookers lock right now? They
    -- may still fail and free them: wait for one, holding no unit of this
    -- area, then try again. Otherwise the area is full.
    select array_agg(f.id) into v_free
    from (select s.id from app.seats s
          where s.show_id = claim_area_units.show_id and s.section = area and s.standing
            and not exists (
              select 1 from app.booking_seats bs
              where bs.seat_id = s.id and bs.active and bs.legs && claim_area_units.legs
                and (bs.held_until is null or bs.held_until > clock_timestamp()))
          order by s.id
          limit quantity) f;
    exit when coalesce(cardinality(v_free), 0) < quantity;
    -- Which one: the first free unit others lock from a random unit on, so
    -- the bookers that wait spread over the lockers instead of all queueing
    -- on the area's first free unit and waking one by one.
    v_start := v_area.first_unit_id + floor(random() * (v_area.last_unit_id - v_area.first_unit_id + 1))::bigint;
    select s.id into v_wait
    from app.seats s
    where s.show_id = claim_area_units.show_id and s.section = area and s.standing
      and s.id <> all(v_got)
      and not exists (
        select 1 from app.booking_seats bs
        where bs.seat_id = s.id and bs.active and bs.legs && claim_area_units.legs
          and (bs.held_until is null or bs.held_until > clock_timestamp()))
    order by s.id < v_start, s.id
    limit 1;
    exit when v_wait is null;
    begin
      perform 1 from app.seats s where s.id = v_wait for no key update;
      raise exception using errcode = 'BKSKP';
    exception when sqlstate 'BKSKP' then
      null;
    end;
  end loop;
  return null;
end;
$$;
comment on function app.claim_area_units(uuid, text, int, int4range) is
  'Lock and return `quantity` free units of a standing area over these legs (SKIP LOCKED, from a random unit); null when it has not enough.';

-- The booking core takes the show as its own argument, the one a distributed
-- database routes the call by; the request must name the same show. No
-- defaults: a call with the old argument list resolves to the old signature
-- alone, which stays below for SQL callers and the previous release.
create or replace function app.create_booking(
  show_id uuid, request jsonb, idempotency_key text, max_seats int,
  hold_default_seconds int, hold_max_seconds int, client_address text, hold_limits jsonb
) returns jsonb
language plpgsql volatile
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
-- Why one function: the whole booking is one call and one transaction, so
-- a client makes one round trip, no interleaving of two bookers can see a
-- half-done booking, and a retry with the same Idempotency-Key finds the
-- committed outcome. An order of seats and standing admissions is all or
-- nothing.
--
-- It reads in order: check → idempotency → legs → seats → claim → finish.
-- The booking row is written once, in its final state: confirmed, pending
-- (a hold) or failed.
--
-- Returns {"booking": <booking>, "replayed": <bool>}; the booking carries its
-- secret, which is stored only as a hash. A booking whose seats or areas were
-- not available is recorded as failed and returned, not raised.
declare
  v_show_id uuid := create_booking.show_id;
  v_seat_ids bigint[];
  v_seat_labels text[];
  v_quantity int := (request->>'quantity')::int;
  v_areas jsonb := request->'areas';
  v_area record;
  v_units bigint[] := '{}';
  v_got bigint[];
  v_areas_json jsonb;
  v_full_areas text[];
  v_hold boolean := coalesce((request->>'hold')::boolean, false);
  v_hold_seconds int := coalesce((request->>'holdSeconds')::int, hold_default_seconds);
  v_requested int;
  v_replay jsonb;
  v_secret text;
  v_show record;
  v_legs int4range;
  v_seats bigint[];
  v_claim bigint[];
  v_taken bigint[];
  v_lapsed boolean;
  v_found int;
  v_distinct int;
  v_seats_json jsonb;
  v_unavailable_json jsonb;
  v_client_key text;
  v_booking_id uuid := app.uuid_v7();
  v_now timestamptz;
  v_held_until timestamptz;
  v_reason text;
  v_total bigint;
  v_status app.booking_status;
  v_result jsonb;
begin
  -- The show is an argument, so a distributed database can route the call
  -- by it (docs/scaling.md); the request must name the same show.
  if (request->>'showId')::uuid is distinct from v_show_id then
    perform app.raise_problem('BKREQ', 'The request names another show than the one it is booked in');
  end if;

  -- Check: what the contract cannot say.
  if (request ? 'seatIds')::int + (request ? 'seatLabels')::int + (request ? 'quantity')::int > 1
     or (request ? 'seatIds')::int + (request ? 'seatLabels')::int + (request ? 'quantity')::int + (request ? 'areas')::int = 0 then
    perform app.raise_problem('BKREQ', 'Name the seats by seatIds or by seatLabels, or ask for a quantity: at most one of them, with or without areas');
  end if;
  if v_quantity is null and (request ?| array['section', 'category', 'maxPrice', 'allowSeparate']) then
    perform app.raise_problem('BKREQ', 'section, category, maxPrice and allowSeparate go with quantity');
  end if;
  if (select count(*) <> count(distinct a->>'name') from jsonb_array_elements(coalesce(v_areas, '[]')) a) then
    perform app.raise_problem('BKREQ', 'An area is named more than once',
      jsonb_build_object('errors', jsonb_build_array(jsonb_build_object('name', 'body.areas', 'reason', 'must name each area once'))));
  end if;
  v_requested := coalesce(v_quantity, jsonb_array_length(request->'seatIds'), jsonb_array_length(request->'seatLabels'), 0)
                 + coalesce((select sum((a->>'quantity')::int) from jsonb_array_elements(v_areas) a), 0);
  if v_requested < 1 then
    perform app.raise_problem('BKREQ', 'A booking needs at least one seat or admission');
  end if;
  if v_requested > max_seats then
    perform app.raise_problem('SEATN', format('A booking may have at most %s seats and admissions', max_seats),
      jsonb_build_object('maxSeats', max_seats));
  end if;
  if request ? 'holdSeconds' and not v_hold then
    perform app.raise_problem('BKREQ', 'holdSeconds goes with "hold": true');
  end if;
  if v_hold and v_hold_seconds not between 1 and hold_max_seconds then
    perform app.raise_problem('BKREQ', format('A hold lasts between 1 and %s seconds', hold_max_seconds),
      jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
        'name', 'body.holdSeconds', 'reason', format('must be at most %s', hold_max_seconds)))));
  end if;

  -- Idempotency: a replay answers what the first request did, with the
  -- same secret, derived again from the key.
  v_replay := app.idempotency_begin(idempotency_key, 'create-booking', request);
  v_secret := app.booking_secret(idempotency_key);
  if v_replay is not null then
    return jsonb_build_object('booking', v_replay || jsonb_build_object('secret', v_secret), 'replayed', true);
  end if;

  -- Legs: the show on sale now, and the legs this booking travels (the
  -- whole trip unless it names stops).
  select s.kind, s.leg_count, s.currency, s.sales_start_at, s.sales_end_at into v_show
  from app.shows s where s.id = v_show_id;
  if not found then
    perform app.raise_problem('SHWNF', format('There is no show %s', v_show_id), jsonb_build_object('showId', v_show_id));
  end if;
  v_now := clock_timestamp();
  if v_now < v_show.sales_start_at or v_now >= v_show.sales_end_at then
    perform app.raise_problem('SALES',
      case when v_now < v_show.sales_start_at then format('Sales open at %s', v_show.sales_start_at)
           else format('Sales closed at %s', v_show.sales_end_at) end,
      jsonb_strip_nulls(jsonb_build_object('salesStartAt', v_show.sales_start_at, 'salesEndAt', v_show.sales_end_at)));
  end if;
  if request ? 'fromStop' or request ? 'toStop' then
    v_legs := app.leg_range(v_show_id, request->>'fromStop', request->>'toStop');
  else
    v_legs := int4range(0, v_show.leg_count);
  end if;
  if v_areas is not null then
    v_areas_json := app.requested_areas_json(v_show_id, v_areas, v_legs);
    if coalesce(jsonb_array_length(v_areas_json), 0) <> jsonb_array_length(v_areas) then
      perform app.raise_problem('AREAX', 'Some areas do not exist in this show',
        jsonb_build_object('unknownAreas', (
          select jsonb_agg(a->>'name' order by a->>'name') from jsonb_array_elements(v_areas) a
          where not exists (select 1 from app.areas x where x.show_id = v_show_id and x.name = a->>'name'))));
    end if;
  end if;

  -- Before any seat lock: the limits' own locks come first in the lock
  -- order. Admissions count as seats.
  if v_hold then
    v_client_key := app.client_key(client_address);
    perform app.check_hold_limits(v_show_id, v_client_key, request->'customer'->>'email', v_requested, hold_limits);
  end if;

  -- Seats: named, or best available; standing units after them, since
  -- their ids are above every seat's (the lock order is ascending ids).
  if request ? 'seatIds' or request ? 'seatLabels' then
    -- The seats, and which are taken, without locking anything: a seat in a
    -- committed booking that nothing is changing is lost whatever happens
    -- next, so a loser is answered here, without queueing on the seat's
    -- lock, and without taking one.
    -- Each lookup has one index that fits it exactly (the primary key, or
    -- (show_id, label)), so the plan stays a few index probes even right
    -- after a big show is created, before statistics catch up.
    select array_agg(l.id order by l.id), count(*), count(distinct l.id),
           array_agg(l.id order by l.id) filter (where l.taken),
           jsonb_agg(l.seat order by l.id),
           jsonb_agg(jsonb_build_object('id', l.id, 'label', l.seat->>'label') order by l.id) filter (where l.taken)
    into v_seats, v_found, v_distinct, v_taken, v_seats_json, v_unavailable_json
    from (
      select s.id,
             jsonb_build_object('id', s.id, 'label', s.label, 'section', s.section, 'row', s.row_label, 'number', s.number,
                                'category', s.category, 'price', (select c.price from app.seat_categories c
                                                                  where c.show_id = s.show_id and c.code = s.category)
                                                                 * (upper(v_legs) - lower(v_legs))) as seat,
             -- Taken for good: by a booking row no transaction is changing
             -- (xmax 0). One being cancelled, confirmed or expired right now
             -- may be free once that commits: those seats go the locking way,
             -- and wait for it, as every booker did before this look.
             -- By seat alone: with show_id too, the exclusion constraint's
             -- GiST index cannot prune a show's many entries (52 pages read
             -- on a 6,000-booking show, against 4 by seat and legs).
             not s.for_sale or exists (
               select 1 from app.booking_seats bs
               where bs.seat_id = s.id and bs.active and bs.legs && v_legs
                 and (bs.held_until is null or bs.held_until > v_now) and bs.xmax = '0'::xid) as taken
      -- One probe per named seat: by id, or by (show_id, label). LIMIT 1
      -- keeps each a probe in the cached generic plan, which otherwise may
      -- join by reading every seat of a big show. A standing unit is not a
      -- seat to name: areas are booked by quantity.
      from (select s.* from jsonb_array_elements_text(request->'seatIds') x(id)
            cross join lateral (select * from app.seats s where s.id = x.id::bigint and s.show_id = v_show_id
                                and not s.standing limit 1) s
            union all
            select s.* from jsonb_array_elements_text(request->'seatLabels') x(label)
            cross join lateral (select * from app.seats s where s.show_id = v_show_id and s.label = x.label
                                and not s.standing limit 1) s) s
    ) l;
    if v_found <> v_distinct then
      perform app.raise_problem('SEATD', 'The same seat is named more than once');
    end if;
    if v_found <> coalesce(jsonb_array_length(request->'seatIds'), jsonb_array_length(request->'seatLabels')) then
      v_seat_ids := array(select jsonb_array_elements_text(request->'seatIds')::bigint);
      v_seat_labels := array(select jsonb_array_elements_text(request->'seatLabels'));
      perform app.raise_problem('SEATX', 'Some seats do not exist in this show',
        jsonb_build_object('unknownSeats', coalesce(
          (select jsonb_agg(x order by x) from unnest(v_seat_ids) x
            where not exists (select 1 from app.seats s where s.id = x and s.show_id = v_show_id and not s.standing)),
          (select jsonb_agg(x order by x) from unnest(v_seat_labels) x
            where not exists (select 1 from app.seats s where s.label = x and s.show_id = v_show_id and not s.standing)))));
    end if;
    if v_taken is null then
      -- Lock the seat rows in ascending id order: bookings of overlapping
      -- seats queue on the first seat they share and can never deadlock.
      -- FOR NO KEY UPDATE conflicts with itself and with nothing else.
      perform 1 from app.seats s where s.id = any(v_seats) order by s.id for no key update;
      -- Under the locks, a new statement sees every booking committed
      -- before they were granted.
      v_now := clock_timestamp();
      select array_agg(distinct bs.seat_id order by bs.seat_id) filter (where bs.held_until is null or bs.held_until > v_now),
             coalesce(bool_or(bs.held_until <= v_now), false)
      into v_taken, v_lapsed
      from app.booking_seats bs
      where bs.seat_id = any(v_seats) and bs.active and bs.legs && v_legs;
      if v_taken is not null then
        select jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id) into v_unavailable_json
        from app.seats s where s.id = any(v_taken);
      end if;
    end if;
    if v_taken is not null then
      v_reason := 'seats-unavailable';
    end if;
  elsif v_quantity is not null then
    -- Best available takes its seats locked (SKIP LOCKED), already checked.
    v_seats := app.pick_best_seats(v_show_id, v_quantity, request->>'section', request->>'category',
      (request->>'maxPrice')::bigint, coalesce((request->>'allowSeparate')::boolean, false), v_legs);
    if v_seats is null then
      v_reason := 'not-enough-seats';
    else
      v_seats_json := app.seats_json(v_seats, v_legs);
      v_now := clock_timestamp();
      select coalesce(bool_or(bs.held_until <= v_now), false) into v_lapsed
      from app.booking_seats bs
      where bs.seat_id = any(v_seats) and bs.active and bs.legs && v_legs;
    end if;
  end if;

  -- Standing units, area by area in the order of their ids, each taken
  -- locked (SKIP LOCKED) and free. Not when the seats already failed.
  if v_areas is not null and v_reason is null then
    for v_area in
      select a.name, (r->>'quantity')::int as quantity
      from jsonb_array_elements(v_areas) r
      join app.areas a on a.show_id = v_show_id and a.name = r->>'name'
      order by a.first_unit_id
    loop
      v_got := app.claim_area_units(v_show_id, v_area.name, v_area.quantity, v_legs);
      if v_got is null then
        v_full_areas := v_full_areas || v_area.name;
      else
        v_units := v_units || v_got;
      end if;
    end loop;
    if v_full_areas is not null then
      v_reason := 'area-full';
    end if;
  end if;

  if v_reason is null then
    -- Claim. Lapsed holds on these seats and units end now, under their
    -- locks, so no sweeper has to run first; their booking rows are locked
    -- in id order.
    v_claim := coalesce(v_seats, '{}') || v_units;
    if cardinality(v_units) > 0 then
      v_now := clock_timestamp();
      select coalesce(v_lapsed, false) or coalesce(bool_or(bs.held_until <= v_now), false) into v_lapsed
      from app.booking_seats bs
      where bs.seat_id = any(v_units) and bs.active and bs.legs && v_legs;
    end if;
    if v_lapsed then
      perform 1 from app.bookings b
      where b.id in (select bs.booking_id from app.booking_seats bs
                     where bs.seat_id = any(v_claim) and bs.active and bs.legs && v_legs)
        and b.status = 'pending' and b.expires_at <= v_now
      order by b.id
      for update;
      update app.bookings b set status = 'expired', updated_at = v_now
      where b.id in (select bs.booking_id from app.booking_seats bs
                     where bs.seat_id = any(v_claim) and bs.active and bs.legs && v_legs)
        and b.status = 'pending' and b.expires_at <= v_now;
    end if;
    v_held_until := case when v_hold then v_now + make_interval(secs => v_hold_seconds) end;
    v_status := case when v_hold then 'pending' else 'confirmed' end;
    with claimed as (
      insert into app.booking_seats (booking_id, seat_id, show_id, legs, price, active, held_until)
      select v_booking_id, s.id, v_show_id, v_legs, c.price * (upper(v_legs) - lower(v_legs)), true, v_held_until
      from app.seats s join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
      where s.id = any(v_claim)
      returning price
    )
    select sum(price) into v_total from claimed;
    insert into app.bookings (id, show_id, status, legs, customer_name, customer_email, total_price,
                              expires_at, created_at, updated_at, confirmed_at, secret_hash, client_key)
    values (v_booking_id, v_show_id, v_status, v_legs, request->'customer'->>'name', request->'customer'->>'email', v_total,
            v_held_until, v_now, v_now, case when v_hold then null else v_now end, app.secret_hash(v_secret), v_client_key);
    -- Its seat event, in this transaction; the sequencer gives it its
    -- position once committed.
    insert into app.seat_events (show_id, booking_id, type, seat_ids, legs)
    values (v_show_id, v_booking_id, case when v_hold then 'held' else 'booked' end,
            array(select x from unnest(v_claim) x order by x), v_legs);
  else
    v_now := clock_timestamp();
    v_status := 'failed';
    v_total := 0;
    insert into app.bookings (id, show_id, status, legs, customer_name, customer_email, total_price, failure_reason,
                              requested_seat_ids, unavailable_seat_ids, requested_areas, unavailable_areas,
                              created_at, updated_at, secret_hash)
    values (v_booking_id, v_show_id, 'failed', v_legs, request->'customer'->>'name', request->'customer'->>'email', 0, v_reason,
            coalesce(v_seats, '{}'), coalesce(v_taken, '{}'), v_areas, v_full_areas, v_now, v_now, app.secret_hash(v_secret));
  end if;

  -- Finish: the answer from what was read, as booking_json would build it.
  v_result := jsonb_strip_nulls(jsonb_build_object(
    'id', v_booking_id,
    'showId', v_show_id,
    'status', v_status,
    'customer', jsonb_build_object('name', request->'customer'->>'name', 'email', request->'customer'->>'email'),
    'seats', coalesce(v_seats_json, '[]'),
    'areas', v_areas_json,
    'unavailableSeats', case when v_status = 'failed' then coalesce(v_unavailable_json, '[]') end,
    'unavailableAreas', to_jsonb(v_full_areas),
    'totalPrice', v_total,
    'currency', v_show.currency,
    'failureReason', v_reason,
    'expiresAt', v_held_until,
    'createdAt', v_now,
    'updatedAt', v_now,
    'confirmedAt', case when v_status = 'confirmed' then v_now end));
  if v_show.kind = 'trip' then
    v_result := v_result || jsonb_strip_nulls(jsonb_build_object(
      'fromStop', (select st.name from app.show_stops st where st.show_id = v_show_id and st.position = lower(v_legs)),
      'toStop', (select st.name from app.show_stops st where st.show_id = v_show_id and st.position = upper(v_legs))));
  end if;
  -- The stored replay never holds the secret: a replay derives it again.
  if idempotency_key is not null then
    perform app.idempotency_end(idempotency_key, v_result);
  end if;
  return jsonb_build_object('booking', v_result || jsonb_build_object('secret', v_secret), 'replayed', false);
end;
$$;
comment on function app.create_booking(uuid, jsonb, text, int, int, int, text, jsonb) is
  'Book seats and standing admissions in a show: one call, one transaction, the booking written once as Confirmed, Pending or Failed. Returns {booking (with its secret), replayed}.';

create or replace function app.create_booking(
  request jsonb, idempotency_key text default null, max_seats int default 10,
  hold_default_seconds int default 600, hold_max_seconds int default 1800,
  client_address text default null, hold_limits jsonb default '{}'
) returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
begin
  return app.create_booking((request->>'showId')::uuid, request, idempotency_key, max_seats,
    hold_default_seconds, hold_max_seconds, client_address, hold_limits);
end;
$$;
comment on function app.create_booking(jsonb, text, int, int, int, text, jsonb) is
  'Book seats and standing admissions, the show named in the request: create_booking(show_id, request, ...).';

create or replace function app.seat_map_json(show_id uuid, only_status text default null, from_stop text default null,
                                             to_stop text default null) returns text
language sql stable
set search_path = pg_catalog
as $$
  -- The whole seat map as JSON text in one query, passed through as it is.
  -- A seat's status is over the requested legs: booked or held when any
  -- active booking overlaps them. An area reports its room over those legs:
  -- a unit is taken when any active booking overlaps them.
  with range as (
    select app.leg_range(seat_map_json.show_id, from_stop, to_stop) as legs
  ), taken as (
    -- booked beats held when a seat has both on different legs of a trip
    select bs.seat_id, bool_and(bs.held_until is not null) as held
    from app.booking_seats bs
    where bs.show_id = seat_map_json.show_id and bs.active and bs.legs && (select legs from range)
      and (bs.held_until is null or bs.held_until > clock_timestamp())
    group by bs.seat_id
  ), seat_status as (
    select s.map_json, c.price, s.section_index, s.row_index, s.seat_index,
           case when not s.for_sale then 'blocked'
                when t.seat_id is null then 'available'
                when t.held then 'held'
                else 'booked' end as status
    from app.seats s
    join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
    left join taken t on t.seat_id = s.id
    where s.show_id = seat_map_json.show_id and not s.standing
  ), area_taken as (
    select s.section, count(*) filter (where t.held) as held, count(*) filter (where not t.held) as booked
    from taken t join app.seats s on s.id = t.seat_id
    where s.standing
    group by s.section
  ), areas as (
    select json_agg(json_build_object(
             'name', a.name, 'category', a.category, 'price', c.price, 'capacity', a.capacity,
             'available', a.capacity - coalesce(t.held, 0) - coalesce(t.booked, 0),
             'held', coalesce(t.held, 0), 'booked', coalesce(t.booked, 0)) order by a.position)::text as json
    from app.areas a
    join app.seat_categories c on c.show_id = a.show_id and c.code = a.category
    left join area_taken t on t.section = a.name
    where a.show_id = seat_map_json.show_id
  )
  select '{"showId":"' || seat_map_json.show_id
    || '","fromStop":' || coalesce(to_json(from_stop)::text, 'null')
    || ',"toStop":' || coalesce(to_json(to_stop)::text, 'null')
    || ',"counts":' || json_build_object(
      'total', count(*),
      'available', count(*) filter (where status = 'available'),
      'held', count(*) filter (where status = 'held'),
      'booked', count(*) filter (where status = 'booked'),
      'blocked', count(*) filter (where status = 'blocked'))::text
    || coalesce(',"areas":' || (select json from areas), '')
    || ',"seats":[' || coalesce(string_agg(map_json || price || ',"status":"' || status || '"}', ','
                                           order by section_index, row_index, seat_index)
                                filter (where only_status is null or status = only_status), '')
    || ']}'
  from seat_status
  having (select legs from range) is not null;
$$;
comment on function app.seat_map_json(uuid, text, text, text) is
  'The seat map of a show over a leg range (default: the whole trip) as JSON text, with counts per status and each standing area''s room; null when there is no such show. Raises STOPX.';

create or replace function app.show_events(show_id uuid, after bigint default 0, page_size integer default 100,
                                           with_bookings boolean default false) returns json
language sql stable
set search_path = pg_catalog
as $$
  -- Sequenced events of a show after a position, oldest first. Standing
  -- units are reported per area, as how many, never one by one. Admissions
  -- (and their gate) only in the admin's history: when a seat's holder came
  -- in is nobody else's business, and changes no seat's availability.
  select coalesce(json_agg(
      json_build_object('id', e.position, 'showId', e.show_id, 'type', e.type)::jsonb
      || case when with_bookings then jsonb_build_object('bookingId', e.booking_id) else '{}' end
      || case when e.type = 'admitted' then jsonb_build_object('gate',
           (select a.gate from app.ticket_admissions a
            where a.show_id = e.show_id and a.booking_id = e.booking_id and a.seat_id = e.seat_ids[1])) else '{}' end
      || jsonb_build_object(
        'seats', coalesce((select jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id)
                           from app.seats s where s.id = any(e.seat_ids) and not s.standing), '[]'))
      || coalesce((select jsonb_build_object('areas', jsonb_agg(jsonb_build_object('name', x.section, 'quantity', x.quantity)
                                                                order by x.section))
                   from (select s.section, count(*) as quantity from app.seats s
                         where s.id = any(e.seat_ids) and s.standing group by s.section) x
                   having count(*) > 0), '{}')
      || jsonb_build_object(
        'fromStop', (select st.name from app.show_stops st where st.show_id = e.show_id and st.position = lower(e.legs)),
        'toStop', (select st.name from app.show_stops st where st.show_id = e.show_id and st.position = upper(e.legs)),
        'at', e.at)
      order by e.position), '[]')
  from (
    select * from app.seat_events e
    where e.show_id = show_events.show_id and e.position > after
      and (with_bookings or e.type <> 'admitted')
    order by e.position
    limit page_size
  ) e;
$$;
comment on function app.show_events(uuid, bigint, integer, boolean) is
  'A page of a show''s sequenced seat events after a position, as JSON, standing units counted per area; booking ids and admissions only with with_bookings (the admin history).';

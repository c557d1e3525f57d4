--! Previous: -
--! Hash: sha1:1f933732c8ccfdf3ad36b55e23a101b8cf8aafeb
--! Message: Foundation: shows, seats and bookings with the booking core

-- Foundation: shows with seat layouts, bookings, and the booking core.
-- The schema is dropped first so that this migration can be re-run while
-- it is being written; on a new database the drop does nothing.

drop schema if exists app cascade;
create extension if not exists btree_gist with schema public;
create schema app;
comment on schema app is 'Ticket booking: shows and trips, their seats, and bookings of those seats.';

-- A show is a trip with one leg: bookings always carry a leg range, so
-- shows (one leg, [0,1)) and trips (legs between stops) share one model.
create type app.show_kind as enum ('show', 'trip');
create type app.booking_status as enum ('pending', 'confirmed', 'failed', 'cancelled', 'expired');

create table app.shows (
  id uuid primary key default gen_random_uuid(),
  kind app.show_kind not null,
  name text not null check (char_length(name) between 1 and 200),
  venue text not null check (char_length(venue) between 1 and 200),
  starts_at timestamptz not null,
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  leg_count int not null default 1 check (leg_count between 1 and 100),
  seat_count int not null check (seat_count between 1 and 100000),
  created_at timestamptz not null default now()
);
comment on table app.shows is 'A show or a trip. leg_count is 1 for a show; a trip has one leg between each pair of consecutive stops.';
create index shows_starts_at_idx on app.shows (starts_at, id);
create index shows_kind_starts_at_idx on app.shows (kind, starts_at, id);

create table app.seat_categories (
  show_id uuid not null references app.shows on delete cascade,
  code text not null,
  price int not null check (price between 0 and 100000000),
  primary key (show_id, code)
);
comment on table app.seat_categories is 'Price per seat category of a show, in minor units of the show currency (per leg for trips).';

create table app.seats (
  id bigint generated always as identity primary key,
  show_id uuid not null references app.shows on delete cascade,
  section text not null,
  row_label text not null,
  number int not null check (number >= 1),
  label text not null,
  category text not null,
  -- Geometry for best-available selection: 0 is the front row of a section
  -- and the left-most seat of a row.
  section_index int not null,
  row_index int not null,
  seat_index int not null,
  for_sale boolean not null default true,
  unique (show_id, label),
  unique (show_id, section, row_label, number),
  foreign key (show_id, category) references app.seat_categories (show_id, code)
);
comment on table app.seats is 'Every seat of a show. Bookers lock these rows (FOR NO KEY UPDATE, in id order) to serialise on a seat.';

create table app.bookings (
  id uuid primary key default gen_random_uuid(),
  show_id uuid not null references app.shows on delete cascade,
  status app.booking_status not null default 'pending',
  legs int4range not null default int4range(0, 1) check (not isempty(legs) and lower(legs) >= 0),
  customer_name text not null check (char_length(customer_name) between 1 and 200),
  customer_email text not null check (char_length(customer_email) between 3 and 320),
  total_price bigint not null default 0 check (total_price >= 0),
  failure_reason text,
  expires_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  confirmed_at timestamptz,
  cancelled_at timestamptz,
  cancel_reason text
);
comment on table app.bookings is 'A request for seats and its outcome. Failed bookings are kept as the record of who lost a seat race.';
comment on column app.bookings.legs is 'Leg range [from stop, to stop) of a trip; [0,1) for a show.';
create index bookings_show_created_idx on app.bookings (show_id, created_at);
create index bookings_pending_expiry_idx on app.bookings (expires_at) where status = 'pending';

create table app.booking_seats (
  booking_id uuid not null references app.bookings on delete cascade,
  seat_id bigint not null references app.seats on delete cascade,
  show_id uuid not null,
  legs int4range not null,
  price bigint not null check (price >= 0),
  -- active: this booking holds or owns the seat over legs. Only pending and
  -- confirmed bookings have active seats; the booking functions keep it so.
  active boolean not null,
  -- held_until: set while the booking is a hold; null once confirmed.
  held_until timestamptz,
  -- unavailable: on a failed booking, this seat was the reason.
  unavailable boolean not null default false,
  primary key (booking_id, seat_id),
  -- The backstop beneath the seat locks: no seat is ever in two active
  -- bookings over overlapping legs, whatever a function does.
  constraint booking_seats_no_double_booking
    exclude using gist (seat_id with =, legs with &&) where (active)
);
comment on table app.booking_seats is 'The seats a booking asked for; active rows are the seats it holds or owns.';
-- GiST cannot answer seat_id = any(...), so the booking path gets a btree.
create index booking_seats_active_seat_idx on app.booking_seats (seat_id) where active;
create index booking_seats_active_show_idx on app.booking_seats (show_id, seat_id) where active;
create index booking_seats_seat_idx on app.booking_seats (seat_id);

--------------------------------------------------------------------------------
-- Raising problems. Functions raise custom SQLSTATEs (see db/CONVENTIONS.md);
-- DETAIL carries a JSON object of extension members for the problem response.

create function app.raise_problem(errcode text, message text, members jsonb default '{}')
returns void
language plpgsql volatile
set search_path = pg_catalog
as $$
begin
  raise exception using errcode = raise_problem.errcode, message = raise_problem.message,
    detail = raise_problem.members::text;
end;
$$;
comment on function app.raise_problem(text, text, jsonb) is
  'Raise a custom SQLSTATE with a human message and JSON extension members in DETAIL.';

--------------------------------------------------------------------------------
-- JSON views of rows, in the API's camelCase shape, built in the database so
-- a handler passes them through.

create function app.show_json(s app.shows)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select jsonb_build_object(
    'id', s.id,
    'kind', s.kind,
    'name', s.name,
    'venue', s.venue,
    'startsAt', s.starts_at,
    'currency', s.currency,
    'seatCount', s.seat_count,
    'createdAt', s.created_at
  );
$$;
comment on function app.show_json(app.shows) is 'A show as the API returns it in lists.';

create function app.booking_json(booking_id uuid)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select jsonb_strip_nulls(jsonb_build_object(
    'id', b.id,
    'showId', b.show_id,
    'status', b.status,
    'customer', jsonb_build_object('name', b.customer_name, 'email', b.customer_email),
    'seats', coalesce((
      select jsonb_agg(jsonb_build_object(
        'id', s.id, 'label', s.label, 'section', s.section, 'row', s.row_label,
        'number', s.number, 'category', s.category, 'price', bs.price) order by s.id)
      from app.booking_seats bs join app.seats s on s.id = bs.seat_id
      where bs.booking_id = b.id), '[]'),
    'unavailableSeats', case when b.status = 'failed' then coalesce((
      select jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id)
      from app.booking_seats bs join app.seats s on s.id = bs.seat_id
      where bs.booking_id = b.id and bs.unavailable), '[]') end,
    'totalPrice', b.total_price,
    'currency', sh.currency,
    'failureReason', b.failure_reason,
    'expiresAt', b.expires_at,
    'createdAt', b.created_at,
    'updatedAt', b.updated_at,
    'confirmedAt', b.confirmed_at,
    'cancelledAt', b.cancelled_at,
    'cancelReason', b.cancel_reason
  ))
  from app.bookings b join app.shows sh on sh.id = b.show_id
  where b.id = booking_json.booking_id;
$$;
comment on function app.booking_json(uuid) is 'A booking as the API returns it: status, seats, price and timestamps.';

--------------------------------------------------------------------------------
-- Shows

create function app.create_show(spec jsonb)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Why one function: a show and all its seats appear together or not at all,
-- and the layout rules live in one place whoever calls it.
declare
  v_show app.shows;
  v_seat_count bigint;
  v_dup text;
begin
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

  select sum((r->>'seats')::int) into v_seat_count
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r;
  if coalesce(v_seat_count, 0) not between 1 and 100000 then
    perform app.raise_problem('LAYOT',
      format('A show has between 1 and 100000 seats; this layout has %s', coalesce(v_seat_count, 0)),
      jsonb_build_object('field', 'sections'));
  end if;

  insert into app.shows (kind, name, venue, starts_at, currency, seat_count)
  values ((spec->>'kind')::app.show_kind, spec->>'name', spec->>'venue',
          (spec->>'startsAt')::timestamptz, spec->>'currency', v_seat_count)
  returning * into v_show;

  insert into app.seat_categories (show_id, code, price)
  select v_show.id, c->>'code', (c->>'price')::int
  from jsonb_array_elements(spec->'categories') c;

  insert into app.seats (show_id, section, row_label, number, label, category,
                         section_index, row_index, seat_index)
  select v_show.id, sec->>'name', r->>'label', n,
         format('%s-%s-%s', sec->>'name', r->>'label', n),
         r->>'category', si - 1, ri - 1, n - 1
  from jsonb_array_elements(spec->'sections') with ordinality as s1(sec, si),
       jsonb_array_elements(sec->'rows') with ordinality as r1(r, ri),
       generate_series(1, (r->>'seats')::int) as n
  order by si, ri, n;

  return app.show_detail_json(v_show.id);
end;
$$;

create function app.show_detail_json(show_id uuid)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select app.show_json(s) || jsonb_build_object(
    'categories', (
      select jsonb_agg(jsonb_build_object('code', c.code, 'price', c.price) order by c.code)
      from app.seat_categories c where c.show_id = s.id),
    'sections', (
      select jsonb_agg(jsonb_build_object('name', sec.section, 'rows', sec.rows) order by sec.section_index)
      from (
        select r.section, r.section_index,
               jsonb_agg(jsonb_build_object('label', r.row_label, 'category', r.category, 'seats', r.seats)
                         order by r.row_index) as rows
        from (
          select st.section, st.section_index, st.row_label, st.row_index,
                 min(st.category) as category, count(*) as seats
          from app.seats st where st.show_id = s.id
          group by st.section, st.section_index, st.row_label, st.row_index
        ) r
        group by r.section, r.section_index
      ) sec))
  from app.shows s
  where s.id = show_detail_json.show_id;
$$;
comment on function app.show_detail_json(uuid) is 'A show with its categories and seat layout; null when there is no such show.';
comment on function app.create_show(jsonb) is
  'Create a show with its categories and every seat of its layout in one transaction. Raises LAYOT for an inconsistent layout.';

create function app.list_shows(
  kind app.show_kind default null,
  starts_from timestamptz default null,
  starts_before timestamptz default null,
  after_starts_at timestamptz default null,
  after_id uuid default null,
  page_size int default 20
)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  -- Keyset pagination on (starts_at, id): stable under inserts, and an index scan.
  with page as (
    select s
    from app.shows s
    where (list_shows.kind is null or s.kind = list_shows.kind)
      and (starts_from is null or s.starts_at >= starts_from)
      and (starts_before is null or s.starts_at < starts_before)
      and (after_starts_at is null or (s.starts_at, s.id) > (after_starts_at, after_id))
    order by s.starts_at, s.id
    limit page_size + 1
  ), numbered as (
    select p.s, row_number() over (order by (p.s).starts_at, (p.s).id) as n from page p
  )
  select jsonb_build_object(
    'items', coalesce(jsonb_agg(app.show_json(x.s) order by x.n) filter (where x.n <= page_size), '[]'),
    'next', case when count(*) > page_size then (
      select jsonb_build_object('startsAt', (y.s).starts_at, 'id', (y.s).id)
      from numbered y where y.n = page_size) end)
  from numbered x;
$$;
comment on function app.list_shows(app.show_kind, timestamptz, timestamptz, timestamptz, uuid, int) is
  'One page of shows, soonest first, with the key of the last item when more follow.';

create function app.show_seats(show_id uuid, only_status text default null)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  -- The whole seat map as one JSON value: one query, no per-seat round trips.
  with taken as (
    -- booked beats held when a seat has both on different legs of a trip
    select bs.seat_id, bool_and(bs.held_until is not null) as held
    from app.booking_seats bs
    where bs.show_id = show_seats.show_id and bs.active
      and (bs.held_until is null or bs.held_until > clock_timestamp())
    group by bs.seat_id
  ), seat_status as (
    select s.*, c.price,
           case when not s.for_sale then 'blocked'
                when t.seat_id is null then 'available'
                when t.held then 'held'
                else 'booked' end as status
    from app.seats s
    join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
    left join taken t on t.seat_id = s.id
    where s.show_id = show_seats.show_id
  )
  select jsonb_build_object(
    'showId', show_seats.show_id,
    'counts', jsonb_build_object(
      'total', count(*),
      'available', count(*) filter (where status = 'available'),
      'held', count(*) filter (where status = 'held'),
      'booked', count(*) filter (where status = 'booked'),
      'blocked', count(*) filter (where status = 'blocked')),
    'seats', coalesce(jsonb_agg(jsonb_build_object(
        'id', id, 'label', label, 'section', section, 'row', row_label, 'number', number,
        'category', category, 'price', price, 'status', status)
        order by section_index, row_index, seat_index)
      filter (where only_status is null or status = only_status), '[]'))
  from seat_status
  having exists (select 1 from app.shows s where s.id = show_seats.show_id);
$$;
comment on function app.show_seats(uuid, text) is
  'The seat map of a show with each seat''s status and counts per status; null when there is no such show.';

--------------------------------------------------------------------------------
-- The booking core

create function app.book_seats(
  show_id uuid,
  seat_ids bigint[],
  seat_labels text[],
  customer_name text,
  customer_email text
)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Why one function: the whole booking, from the Pending record to its
-- outcome, is one call and one transaction, so a client makes one round trip
-- and no interleaving of two bookers can see a half-done booking.
declare
  v_booking_id uuid;
  v_requested int;
  v_seat_ids bigint[];
  v_taken bigint[];
  v_now timestamptz;
begin
  if (seat_ids is null) = (seat_labels is null) then
    perform app.raise_problem('BKREQ', 'Name the seats either by seatIds or by seatLabels, not both');
  end if;
  v_requested := coalesce(cardinality(seat_ids), cardinality(seat_labels), 0);
  if v_requested = 0 then
    perform app.raise_problem('BKREQ', 'A booking needs at least one seat');
  end if;
  if v_requested <> (select count(distinct x) from unnest(seat_ids) x)
                    + (select count(distinct x) from unnest(seat_labels) x) then
    perform app.raise_problem('SEATD', 'The same seat is named more than once');
  end if;

  if not exists (select 1 from app.shows s where s.id = book_seats.show_id) then
    perform app.raise_problem('SHWNF', format('There is no show %s', book_seats.show_id),
      jsonb_build_object('showId', book_seats.show_id));
  end if;

  insert into app.bookings (show_id, status, customer_name, customer_email)
  values (book_seats.show_id, 'pending', book_seats.customer_name, book_seats.customer_email)
  returning id into v_booking_id;

  -- Lock the requested seat rows in ascending id order. Every path that
  -- changes a seat's bookings locks its seat rows first, in this same order,
  -- so two bookings of overlapping seats queue on the first seat they share
  -- and can never deadlock. FOR NO KEY UPDATE conflicts with itself but not
  -- with the KEY SHARE locks that booking_seats' foreign key takes.
  if seat_ids is not null then
    select array_agg(l.id order by l.id) into v_seat_ids
    from (
      select s.id from app.seats s
      where s.id = any(book_seats.seat_ids) and s.show_id = book_seats.show_id
      order by s.id
      for no key update of s
    ) l;
  else
    select array_agg(l.id order by l.id) into v_seat_ids
    from (
      select s.id from app.seats s
      where s.label = any(book_seats.seat_labels) and s.show_id = book_seats.show_id
      order by s.id
      for no key update of s
    ) l;
  end if;

  if coalesce(cardinality(v_seat_ids), 0) <> v_requested then
    perform app.raise_problem('SEATX', 'Some seats do not exist in this show',
      jsonb_build_object('unknownSeats', coalesce(
        (select jsonb_agg(x order by x) from unnest(book_seats.seat_ids) x
          where not exists (select 1 from app.seats s where s.id = x and s.show_id = book_seats.show_id)),
        (select jsonb_agg(x order by x) from unnest(book_seats.seat_labels) x
          where not exists (select 1 from app.seats s where s.label = x and s.show_id = book_seats.show_id)))));
  end if;

  -- Under the locks, and with a fresh snapshot for this statement, every
  -- committed booking of these seats is visible: read what is taken.
  v_now := clock_timestamp();
  select array_agg(t.id order by t.id) into v_taken
  from (
    select s.id from app.seats s
    where s.id = any(v_seat_ids) and not s.for_sale
    union
    select bs.seat_id from app.booking_seats bs
    where bs.seat_id = any(v_seat_ids) and bs.active and bs.legs && int4range(0, 1)
      and (bs.held_until is null or bs.held_until > v_now)
  ) t;

  insert into app.booking_seats (booking_id, seat_id, show_id, legs, price, active, unavailable)
  select v_booking_id, s.id, s.show_id, int4range(0, 1), c.price,
         v_taken is null, s.id = any(coalesce(v_taken, '{}'))
  from app.seats s
  join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
  where s.id = any(v_seat_ids);

  if v_taken is null then
    update app.bookings b
    set status = 'confirmed', confirmed_at = v_now, updated_at = v_now,
        total_price = (select sum(bs.price) from app.booking_seats bs where bs.booking_id = v_booking_id)
    where b.id = v_booking_id;
  else
    update app.bookings b
    set status = 'failed', updated_at = v_now, failure_reason = 'seats-unavailable'
    where b.id = v_booking_id;
  end if;

  return app.booking_json(v_booking_id);
end;
$$;
comment on function app.book_seats(uuid, bigint[], text[], text, text) is
  'Book seats of a show in one transaction: Pending, then Confirmed when every seat is free, else Failed with the unavailable seats. Raises BKREQ, SEATD, SHWNF, SEATX.';

create function app.get_booking(booking_id uuid)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select app.booking_json(get_booking.booking_id);
$$;
comment on function app.get_booking(uuid) is 'A booking by id; null when there is none.';

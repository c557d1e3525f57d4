--! Previous: sha1:ac4ff35d8ff936966663bdfd875f458205372620
--! Hash: sha1:b7e543197a767db8980add7fc87e627fe030be4c
--! Message: Trips with stops: seats sold per leg between stops

-- Trips with stops: a seat is sold separately on each leg between stops.
--
-- A show is a trip with one leg: every booking already carries a leg range
-- ([0,1) for a show), and the exclusion constraint on (seat, legs) already
-- forbids overlapping active bookings of a seat. This adds the stops, turns a
-- booking's fromStop/toStop into its leg range, prices seats per leg, and
-- answers availability for a leg range.

drop function if exists app.get_booking(uuid);
drop function if exists app.show_seats(uuid, text);
drop function if exists app.show_seats(uuid, text, text, text);
drop function if exists app.leg_range(uuid, text, text);
drop function if exists app.stops_json(uuid);
drop table if exists app.show_stops;

create table app.show_stops (
  show_id uuid not null references app.shows on delete cascade,
  position int not null check (position >= 0),
  name text not null check (char_length(name) between 1 and 100),
  departs_at timestamptz not null,
  primary key (show_id, position),
  unique (show_id, name)
);
comment on table app.show_stops is 'The ordered stops of a trip; leg i runs from stop i to stop i + 1. A show has none.';

create function app.stops_json(show_id uuid)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select jsonb_agg(jsonb_build_object('name', st.name, 'departsAt', st.departs_at) order by st.position)
  from app.show_stops st
  where st.show_id = stops_json.show_id;
$$;
comment on function app.stops_json(uuid) is 'The stops of a trip in order; null for a show.';

create function app.leg_range(show_id uuid, from_stop text, to_stop text)
returns int4range
language plpgsql stable
set search_path = pg_catalog
as $$
-- The legs between two stops, [from, to). Either stop may be omitted: the
-- range then starts at the first stop or ends at the last. Without stops, the
-- whole trip; for a show, its one leg. Null when there is no such show.
declare
  v_show app.shows;
  v_from int;
  v_to int;
  v_unknown jsonb;
begin
  select * into v_show from app.shows s where s.id = leg_range.show_id;
  if not found then
    return null;
  end if;
  if from_stop is null and to_stop is null then
    return int4range(0, v_show.leg_count);
  end if;
  if v_show.kind = 'show' then
    perform app.raise_problem('STOPX', 'A show has no stops; fromStop and toStop are for trips');
  end if;
  v_from := coalesce((select st.position from app.show_stops st where st.show_id = leg_range.show_id and st.name = from_stop), -1);
  v_to := coalesce((select st.position from app.show_stops st where st.show_id = leg_range.show_id and st.name = to_stop), -1);
  v_unknown := (select jsonb_agg(x) from (values (case when from_stop is not null and v_from < 0 then from_stop end),
                                                 (case when to_stop is not null and v_to < 0 then to_stop end)) v(x)
                where x is not null);
  if v_unknown is not null then
    perform app.raise_problem('STOPX', format('This trip has no stop %s', v_unknown #>> '{0}'),
      jsonb_build_object('unknownStops', v_unknown));
  end if;
  v_from := case when from_stop is null then 0 else v_from end;
  v_to := case when to_stop is null then v_show.leg_count else v_to end;
  if v_from >= v_to then
    perform app.raise_problem('STOPX', format('%s does not come before %s on this trip',
      coalesce(from_stop, 'the first stop'), coalesce(to_stop, 'the last stop')));
  end if;
  return int4range(v_from, v_to);
end;
$$;
comment on function app.leg_range(uuid, text, text) is
  'The leg range between two stops of a trip, or the whole trip; null when there is no such show. Raises STOPX.';

create or replace function app.show_json(s app.shows)
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
  ) || case when s.kind = 'trip' then jsonb_build_object('stops', app.stops_json(s.id)) else '{}' end;
$$;

create or replace function app.create_show(spec jsonb)
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
  v_stops int := coalesce(jsonb_array_length(spec->'stops'), 0);
  v_starts_at timestamptz := coalesce((spec->>'startsAt')::timestamptz, (spec->'stops'->0->>'departsAt')::timestamptz);
begin
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

  insert into app.shows (kind, name, venue, starts_at, currency, seat_count, leg_count)
  values ((spec->>'kind')::app.show_kind, spec->>'name', spec->>'venue',
          v_starts_at, spec->>'currency', v_seat_count, greatest(v_stops - 1, 1))
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

create function app.show_seats(show_id uuid, only_status text default null, from_stop text default null, to_stop text default null)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  -- The whole seat map as one JSON value: one query, no per-seat round trips.
  -- A seat's status is over the requested legs: booked or held when any
  -- active booking overlaps them.
  with range as (
    select app.leg_range(show_seats.show_id, from_stop, to_stop) as legs
  ), taken as (
    -- booked beats held when a seat has both on different legs of a trip
    select bs.seat_id, bool_and(bs.held_until is not null) as held
    from app.booking_seats bs
    where bs.show_id = show_seats.show_id and bs.active and bs.legs && (select legs from range)
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
    'showId', show_seats.show_id)
  || case when from_stop is not null then jsonb_build_object('fromStop', from_stop) else '{}' end
  || case when to_stop is not null then jsonb_build_object('toStop', to_stop) else '{}' end
  || jsonb_build_object(
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
  having (select legs from range) is not null;
$$;

comment on function app.show_seats(uuid, text, text, text) is
  'The seat map of a show with each seat''s status over a leg range (default: the whole trip) and counts per status; null when there is no such show. Raises STOPX.';

create or replace function app.booking_json(booking_id uuid)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select jsonb_strip_nulls(jsonb_build_object(
    'id', b.id,
    'showId', b.show_id,
    -- A hold past its expiry reads as expired before the sweep records it.
    'status', case when b.status = 'pending' and b.expires_at <= clock_timestamp() then 'expired'
                   else b.status::text end,
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
  ))
  from app.bookings b join app.shows sh on sh.id = b.show_id
  where b.id = booking_json.booking_id;
$$;

create or replace function app.create_booking(
  request jsonb,
  idempotency_key text default null,
  max_seats int default 10,
  hold_default_seconds int default 600,
  hold_max_seconds int default 1800
)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Why one function: the whole booking, from the Pending record to its
-- outcome, is one call and one transaction, so a client makes one round
-- trip, no interleaving of two bookers can see a half-done booking, and a
-- retry with the same Idempotency-Key finds the committed outcome.
--
-- Returns {"booking": <booking>, "replayed": <bool>}. A booking whose seats
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
  if v_replay is not null then
    return jsonb_build_object('booking', v_replay, 'replayed', true);
  end if;

  -- The legs this booking travels: the whole trip unless it names stops.
  v_legs := app.leg_range(v_show_id, request->>'fromStop', request->>'toStop');
  if v_legs is null then
    perform app.raise_problem('SHWNF', format('There is no show %s', v_show_id),
      jsonb_build_object('showId', v_show_id));
  end if;

  insert into app.bookings (show_id, status, legs, customer_name, customer_email)
  values (v_show_id, 'pending', v_legs, request->'customer'->>'name', request->'customer'->>'email')
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
  perform app.idempotency_end(idempotency_key, v_result);
  return jsonb_build_object('booking', v_result, 'replayed', false);
end;
$$;

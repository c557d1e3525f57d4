--! Previous: sha1:66062c2d15d0b1bd2878a3de43eb2d2222be6d2b
--! Hash: sha1:ac4ff35d8ff936966663bdfd875f458205372620
--! Message: Seat lookups that stay index probes when a new show's statistics lag

-- Seat lookups on the booking path that stay index probes when a show's
-- statistics lag behind it.
--
-- Profiling bookings of a 10,000-seat show created moments before found the
-- planner scanning all of the show's seats through an index on show_id: the
-- statistics did not know the show yet, so `show_id = $1` looked like one row.
-- Seats named by id are now found by primary key alone, claim_seats'
-- insert selects by id alone, and create_show refreshes the seats table's
-- statistics before it returns.

create or replace function app.claim_seats(
  booking_id uuid, show_id uuid, seat_ids bigint[], legs int4range, held_until timestamptz, at timestamptz)
returns bigint[]
language plpgsql volatile
set search_path = pg_catalog
as $$
-- With the seat rows locked by the caller: give them all to the booking,
-- or none. Returns the unavailable seats (and records them on the booking),
-- or null when the booking now holds every seat.
declare
  v_taken bigint[] := app.taken_seats(seat_ids, legs, at);
begin
  if v_taken is null then
    -- Lapsed holds on these seats end now, under the seat locks, so no
    -- sweeper has to run first. Their booking rows are locked in id order.
    perform 1 from app.bookings b
    where b.id in (select bs.booking_id from app.booking_seats bs
                   where bs.seat_id = any(claim_seats.seat_ids) and bs.active and bs.legs && claim_seats.legs)
      and b.status = 'pending' and b.expires_at <= at
    order by b.id
    for update;
    update app.bookings b set status = 'expired', updated_at = at
    where b.id in (select bs.booking_id from app.booking_seats bs
                   where bs.seat_id = any(claim_seats.seat_ids) and bs.active and bs.legs && claim_seats.legs)
      and b.status = 'pending' and b.expires_at <= at;
  end if;

  insert into app.booking_seats (booking_id, seat_id, show_id, legs, price, active, held_until, unavailable)
  select claim_seats.booking_id, s.id, s.show_id, claim_seats.legs, c.price * (upper(claim_seats.legs) - lower(claim_seats.legs)),
         v_taken is null, case when v_taken is null then claim_seats.held_until end,
         s.id = any(coalesce(v_taken, '{}'))
  from app.seats s
  join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
  -- By id alone (the caller checked the show): a show_id condition would
  -- tempt the planner into scanning the show's seats when statistics lag.
  where s.id = any(claim_seats.seat_ids);
  return v_taken;
end;
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
  v_legs int4range := int4range(0, 1);
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

  if not exists (select 1 from app.shows s where s.id = v_show_id) then
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

  insert into app.shows (kind, name, venue, starts_at, currency, seat_count)
  values ((spec->>'kind')::app.show_kind, spec->>'name', spec->>'venue',
          (spec->>'startsAt')::timestamptz, spec->>'currency', v_seat_count)
  returning * into v_show;

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

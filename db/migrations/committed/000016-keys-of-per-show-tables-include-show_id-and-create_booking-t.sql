--! Previous: sha1:b3e31ac144e38a8221183578a889b68693b1c60b
--! Hash: sha1:237cd00785376c5c74ff6f55aba755f971892691
--! Message: Keys of per-show tables include show_id, and create_booking takes the show as its own argument

-- Citus readiness (docs/scaling.md), expand only: the previous release
-- keeps working on this schema (db/CONVENTIONS.md, "Expand and contract").
-- Idempotent while it is current.sql.

-- Every key of a per-show table includes show_id, the column a distributed
-- database would shard by: a unique key that lacks it cannot be enforced
-- within one shard. show_id goes last, so each key still serves the lookups
-- by id that it served before (same indexes, same count), and ids stay
-- unique in practice: time-ordered random UUIDs for bookings, identities
-- for seats and events.
do $$
begin
  if (select array_agg(a.attname::text order by k.ord)
      from pg_constraint c
      cross join lateral unnest(c.conkey) with ordinality k(attnum, ord)
      join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
      where c.conname = 'bookings_pkey' and c.conrelid = 'app.bookings'::regclass) = array['id'] then
    alter table app.bookings drop constraint bookings_pkey, add constraint bookings_pkey primary key (id, show_id);
    alter table app.seats drop constraint seats_pkey, add constraint seats_pkey primary key (id, show_id);
    alter table app.booking_seats drop constraint booking_seats_pkey,
      add constraint booking_seats_pkey primary key (booking_id, seat_id, show_id);
    alter table app.seat_events drop constraint seat_events_pkey, add constraint seat_events_pkey primary key (id, show_id);
  end if;
end;
$$;

-- The booking core with the show as its own argument: what
-- create_distributed_function would name as the distribution argument, so
-- a booking runs on the node that holds its show. The body is the previous
-- create_booking's, with the show taken from the argument.
-- No defaults: a call with the old argument list must resolve to the old
-- signature alone (untyped parameters would otherwise match both).
create or replace function app.create_booking(show_id uuid, request jsonb, idempotency_key text, max_seats integer,
  hold_default_seconds integer, hold_max_seconds integer, client_address text, hold_limits jsonb)
returns jsonb
language plpgsql
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $function$
-- Why one function: the whole booking is one call and one transaction, so
-- a client makes one round trip, no interleaving of two bookers can see a
-- half-done booking, and a retry with the same Idempotency-Key finds the
-- committed outcome.
--
-- It reads as: check the request → idempotency → the show and its legs →
-- the seats (a look without locks, then the locks) → claim → finish. The
-- booking row is written once, in its final state: confirmed, pending (a
-- hold) or failed.
--
-- Returns {"booking": <booking>, "replayed": <bool>}; the booking carries its
-- secret, which is stored only as a hash. A booking whose seats were not
-- available is recorded as failed and returned, not raised.
declare
  v_show_id uuid := create_booking.show_id;
  v_seat_ids bigint[];
  v_seat_labels text[];
  v_quantity int := (request->>'quantity')::int;
  v_hold boolean := coalesce((request->>'hold')::boolean, false);
  v_hold_seconds int := coalesce((request->>'holdSeconds')::int, hold_default_seconds);
  v_requested int;
  v_replay jsonb;
  v_secret text;
  v_show record;
  v_legs int4range;
  v_seats bigint[];
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
  if (request ? 'seatIds')::int + (request ? 'seatLabels')::int + (request ? 'quantity')::int <> 1 then
    perform app.raise_problem('BKREQ', 'Name the seats by seatIds or by seatLabels, or ask for a quantity: exactly one of them');
  end if;
  if v_quantity is null and (request ?| array['section', 'category', 'maxPrice', 'allowSeparate']) then
    perform app.raise_problem('BKREQ', 'section, category, maxPrice and allowSeparate go with quantity');
  end if;
  v_requested := coalesce(v_quantity, jsonb_array_length(request->'seatIds'), jsonb_array_length(request->'seatLabels'));
  if v_requested < 1 then
    perform app.raise_problem('BKREQ', 'A booking needs at least one seat');
  end if;
  if v_requested > max_seats then
    perform app.raise_problem('SEATN', format('A booking may have at most %s seats', max_seats),
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

  -- The show: on sale now, and the legs this booking travels (the whole
  -- trip unless it names stops).
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

  -- Before any seat lock: the limits' own locks come first in the lock order.
  if v_hold then
    v_client_key := app.client_key(client_address);
    perform app.check_hold_limits(v_show_id, v_client_key, request->'customer'->>'email', v_requested, hold_limits);
  end if;

  if v_quantity is null then
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
      -- join by reading every seat of a big show.
      from (select s.* from jsonb_array_elements_text(request->'seatIds') x(id)
            cross join lateral (select * from app.seats s where s.id = x.id::bigint and s.show_id = v_show_id limit 1) s
            union all
            select s.* from jsonb_array_elements_text(request->'seatLabels') x(label)
            cross join lateral (select * from app.seats s where s.show_id = v_show_id and s.label = x.label limit 1) s) s
    ) l;
    if v_found <> v_distinct then
      perform app.raise_problem('SEATD', 'The same seat is named more than once');
    end if;
    if v_found <> v_requested then
      v_seat_ids := array(select jsonb_array_elements_text(request->'seatIds')::bigint);
      v_seat_labels := array(select jsonb_array_elements_text(request->'seatLabels'));
      perform app.raise_problem('SEATX', 'Some seats do not exist in this show',
        jsonb_build_object('unknownSeats', coalesce(
          (select jsonb_agg(x order by x) from unnest(v_seat_ids) x
            where not exists (select 1 from app.seats s where s.id = x and s.show_id = v_show_id)),
          (select jsonb_agg(x order by x) from unnest(v_seat_labels) x
            where not exists (select 1 from app.seats s where s.label = x and s.show_id = v_show_id)))));
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
  else
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
  if v_taken is not null then
    v_reason := 'seats-unavailable';
  end if;

  if v_reason is null then
    -- Claim. Lapsed holds on these seats end now, under the seat locks, so
    -- no sweeper has to run first; their booking rows are locked in id order.
    if v_lapsed then
      perform 1 from app.bookings b
      where b.id in (select bs.booking_id from app.booking_seats bs
                     where bs.seat_id = any(v_seats) and bs.active and bs.legs && v_legs)
        and b.status = 'pending' and b.expires_at <= v_now
      order by b.id
      for update;
      update app.bookings b set status = 'expired', updated_at = v_now
      where b.id in (select bs.booking_id from app.booking_seats bs
                     where bs.seat_id = any(v_seats) and bs.active and bs.legs && v_legs)
        and b.status = 'pending' and b.expires_at <= v_now;
    end if;
    v_held_until := case when v_hold then v_now + make_interval(secs => v_hold_seconds) end;
    v_status := case when v_hold then 'pending' else 'confirmed' end;
    with claimed as (
      insert into app.booking_seats (booking_id, seat_id, show_id, legs, price, active, held_until)
      select v_booking_id, s.id, v_show_id, v_legs, c.price * (upper(v_legs) - lower(v_legs)), true, v_held_until
      from app.seats s join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
      where s.id = any(v_seats)
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
    values (v_show_id, v_booking_id, case when v_hold then 'held' else 'booked' end, v_seats, v_legs);
  else
    v_now := clock_timestamp();
    v_status := 'failed';
    v_total := 0;
    insert into app.bookings (id, show_id, status, legs, customer_name, customer_email, total_price, failure_reason,
                              requested_seat_ids, unavailable_seat_ids, created_at, updated_at, secret_hash)
    values (v_booking_id, v_show_id, 'failed', v_legs, request->'customer'->>'name', request->'customer'->>'email', 0, v_reason,
            coalesce(v_seats, '{}'), coalesce(v_taken, '{}'), v_now, v_now, app.secret_hash(v_secret));
  end if;

  -- Finish: the answer from what was read, as booking_json would build it.
  v_result := jsonb_strip_nulls(jsonb_build_object(
    'id', v_booking_id,
    'showId', v_show_id,
    'status', v_status,
    'customer', jsonb_build_object('name', request->'customer'->>'name', 'email', request->'customer'->>'email'),
    'seats', coalesce(v_seats_json, '[]'),
    'unavailableSeats', case when v_status = 'failed' then coalesce(v_unavailable_json, '[]') end,
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
$function$;

comment on function app.create_booking(uuid, jsonb, text, int, int, int, text, jsonb) is
  'Book seats in a show: one call, one transaction, the booking written once as Confirmed, Pending or Failed. Returns {booking (with its secret), replayed}. The show is the argument a distributed database routes the call by.';

-- The previous signature stays for the previous release, the isolation
-- specs and SQL callers; it names the show from the request. Contract it in
-- a release whose previous release calls the new one.
create or replace function app.create_booking(request jsonb, idempotency_key text default null, max_seats int default 10,
  hold_default_seconds int default 600, hold_max_seconds int default 1800, client_address text default null, hold_limits jsonb default '{}')
returns jsonb
language plpgsql
set search_path = pg_catalog
as $$
begin
  return app.create_booking((request->>'showId')::uuid, request, idempotency_key, max_seats,
    hold_default_seconds, hold_max_seconds, client_address, hold_limits);
end;
$$;
comment on function app.create_booking(jsonb, text, int, int, int, text, jsonb) is
  'Book seats, the show named in the request: create_booking(show_id, request, ...) with the show taken from the request.';

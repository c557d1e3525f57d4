--! Previous: sha1:91cf28df265d83c01f3db785ed3484053a75fcac
--! Hash: sha1:f17aa493c91a6d3794947af9c53e2a58a9f3410d
--! Message: A nearly full standing area reads its bookings only up to a few free units, from where the latest booking saw some

-- A nearly full standing area finds its free units without reading all of
-- its bookings.
--
-- When its two looks at 128 units find no room, a booking read the area's
-- free units (app.free_units: every unit id less the area's bookings) on
-- every attempt, so near the end of a large area's sale each booking read
-- every booking of the area: 72 ms for an area of 100,000. On a scratch
-- server, 16 clients on an area of 100,000: 32 to 34 bookings a second at
-- 99% full, 55 at 97%, 238 at 90%.
--
-- free_units now reads the area's bookings in the order of their units,
-- from a given unit upwards and then from the first, and stops at the
-- first `want` free units it passes (the gaps between consecutive units
-- taken); it reads them all only when there are fewer. claim_area_units
-- asks for N + 4, so "fewer than N, and the area is full" still holds.
--
-- Where it starts matters: a nearly full area's free units gather in a few
-- stretches (at 99.8% full, one area of 100,000 had its last 200 free
-- units in 33 runs, all between 40% and 70% of its ids), and from a random
-- unit the read crossed 3,500 pages on average to reach them. Each ledger
-- row now notes where free units were last seen (`near`: the unit after
-- the last one a booking took, the first one a release freed), the sweep's
-- folded row keeps the latest note, and the read starts at the note of
-- one of the area's 8 latest rows, at random. The same 16 clients: 707
-- bookings a second at 99% full, 1,054 at 97%, 1,219 at 90%; a random
-- start instead gave 208 at 99%; an area of 10,000 within the noise
-- (296 and 385 at 97%, 312 and 304 at 99%, sold out in the run). With 64
-- clients, N + 4 beat N + 16 (732 against 653 at 97%, 324 against 231 at
-- 99.9%), and skipping the looks at 128 units once the ledger says 90%
-- full gave nothing.

alter table app.area_ledger add column if not exists near bigint;
comment on column app.area_ledger.near is 'A unit of the area where free units were last seen: after the last unit a booking took, or the first a release freed; where the next read of a nearly full area starts.';

drop function if exists app.free_units(bigint, bigint, int4range, timestamptz);

create or replace function app.free_units(first_unit bigint, last_unit bigint, legs int4range, at timestamptz,
                                          start_unit bigint, want int) returns bigint[]
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
-- The first `want` units of an area (ids first_unit to last_unit), from
-- start_unit upwards and then from first_unit, that no committed,
-- unchanging booking holds over these legs at that instant (xmax 0, as
-- claim_area_units counts them); all of them when there are fewer, so
-- fewer than asked means these are all. One read of the area's bookings
-- in the order of the B-tree on seat_id, which stops at the gap that
-- completes the answer: each unit between two consecutive units taken is
-- free. On a trip a unit may be in several bookings (different legs);
-- equal neighbours leave no gap.
declare
  v_pass int;
  v_lo bigint;
  v_hi bigint;
  v_last bigint;
  v_got bigint[] := '{}';
begin
  for v_pass in 1..2 loop
    v_lo := case when v_pass = 1 then start_unit else first_unit end;
    v_hi := case when v_pass = 1 then last_unit else start_unit - 1 end;
    continue when v_lo > v_hi;
    -- The gaps below each unit taken.
    v_got := v_got || coalesce((
      select array_agg(g.u)
      from (select generate_series(coalesce(lag(t.seat_id) over (order by t.seat_id), v_lo - 1) + 1, t.seat_id - 1) as u
            from (select bs.seat_id from app.booking_seats bs
                  where bs.seat_id between v_lo and v_hi and bs.active
                    and lower(bs.legs) < upper(free_units.legs) and lower(free_units.legs) < upper(bs.legs)
                    and (bs.held_until is null or bs.held_until > free_units.at) and bs.xmax = '0'::xid
                  order by bs.seat_id) t
            limit want - cardinality(v_got)) g), '{}');
    exit when cardinality(v_got) >= want;
    -- Every booking of the range read: the units above the last one taken.
    select max(bs.seat_id) into v_last
    from app.booking_seats bs
    where bs.seat_id between v_lo and v_hi and bs.active
      and lower(bs.legs) < upper(free_units.legs) and lower(free_units.legs) < upper(bs.legs)
      and (bs.held_until is null or bs.held_until > free_units.at) and bs.xmax = '0'::xid;
    v_got := v_got || array(select generate_series(coalesce(v_last, v_lo - 1) + 1,
                                                   least(v_hi, coalesce(v_last, v_lo - 1) + want - cardinality(v_got))));
    exit when cardinality(v_got) >= want;
  end loop;
  return (select array_agg(x order by x) from unnest(v_got) x);
end;
$$;

comment on function app.free_units(bigint, bigint, int4range, timestamptz, bigint, int) is 'The first free units of a standing area from a unit on, or all when fewer: one ordered read of its bookings that stops once it has enough.';

CREATE OR REPLACE FUNCTION app.claim_area_units(show_id uuid, area text, quantity integer, legs int4range) RETURNS bigint[]
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
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
  v_wait bigint;
  v_first bigint;
  v_round int;
  v_pass int;
  v_open int;
  v_found int;
  v_rows int;
  v_cands bigint[];
  v_near bigint;
begin
  select a.first_unit_id, a.last_unit_id, a.capacity, sh.leg_count into v_area
  from app.areas a join app.shows sh on sh.id = a.show_id
  where a.show_id = claim_area_units.show_id and a.name = area;
  -- Losers first, without a lock. On a show of one leg, the area's ledger
  -- of taken units (area_ledger: a row for each booking and release since
  -- the sweep last folded it, each second) says whether N are left, and a
  -- full area is answered there, whatever its size. It is read only while
  -- short (a sale's busiest seconds leave more rows than are worth
  -- reading), and it keeps a lapsed hold's units until the hold is
  -- expired, so it says full only when no hold of the area has lapsed. On
  -- a trip, whose units are taken per leg, it is not read.
  if v_area.leg_count = 1 then
    select v_area.capacity - coalesce(sum(x.taken), 0), count(*) into v_open, v_rows
    from (select l.taken from app.area_ledger l
          where l.show_id = claim_area_units.show_id and l.area = claim_area_units.area
          limit 64) x;
    if v_rows < 64 and v_open < quantity and not exists (
        select 1 from app.bookings b
        where b.status = 'pending' and b.expires_at <= clock_timestamp() and b.show_id = claim_area_units.show_id
          and exists (select 1 from app.booking_seats bs
                      where bs.booking_id = b.id and bs.active
                        and bs.seat_id between v_area.first_unit_id and v_area.last_unit_id)) then
      return null;
    end if;
  end if;
  -- Where to start: in a large area, a look at 128 consecutive units from
  -- a random one, stopping at the N-th free unit, and then at 128 from
  -- another; the locking read starts at the first free unit seen. An area
  -- that is not nearly full is answered there, whatever its size, and the
  -- second look steps past the long taken runs that a sale's random starts
  -- leave (at 90% and 97% full, 20 to 60% more bookings a second than with
  -- one).
  v_found := 0;
  if v_area.capacity > 1024 then
    for v_pass in 1..2 loop
      v_start := v_area.first_unit_id
        + floor(random() * greatest(v_area.last_unit_id - v_area.first_unit_id - 126, 1))::bigint;
      select count(*), min(f.id) into v_found, v_first
      from (select s.id from app.seats s
            where s.id between v_start and least(v_start + 127, v_area.last_unit_id)
              and not exists (
                select 1 from app.booking_seats bs
                where bs.seat_id = any(array[s.id]) and bs.active
                  and lower(bs.legs) < upper(claim_area_units.legs) and lower(claim_area_units.legs) < upper(bs.legs)
                  and (bs.held_until is null or bs.held_until > clock_timestamp()) and bs.xmax = '0'::xid)
            order by s.id
            limit quantity) f;
      exit when v_found >= quantity;
    end loop;
  end if;
  if v_found >= quantity then
    v_start := v_first;
  else
    -- Not seen: the area is nearly full, or small. A few more free units
    -- than N, read from its bookings in the B-tree on seat_id upwards (a
    -- unit in a committed booking that no transaction is changing, xmax 0,
    -- is taken whatever happens next), are the only units the locking pass
    -- then tries: reading up from a random unit through the long runs of
    -- taken units that a sale's random starts leave cost an index probe a
    -- unit. The read starts where one of the area's latest bookings or
    -- releases saw free units (the ledger's note), else at a random unit:
    -- a nearly full area's free units gather in a few stretches, and from
    -- a random unit the read would cross most of the area to reach them.
    -- Fewer than N, and the area is full.
    select x.near into v_near
    from (select l.near from app.area_ledger l
          where l.show_id = claim_area_units.show_id and l.area = claim_area_units.area and l.near is not null
          order by l.id desc limit 8) x
    order by random() limit 1;
    v_start := case when v_near between v_area.first_unit_id and v_area.last_unit_id then v_near
                    else v_area.first_unit_id + floor(random() * (v_area.last_unit_id - v_area.first_unit_id + 1))::bigint end;
    v_cands := app.free_units(v_area.first_unit_id, v_area.last_unit_id, legs, clock_timestamp(), v_start, quantity + 4);
    if coalesce(cardinality(v_cands), 0) < quantity then
      return null;
    end if;
  end if;
  for v_round in 1..20 loop
    v_got := '{}';
    begin
      for v_pass in 1..2 loop
        loop
          -- Free units over these legs, nobody else locking them; a hold past
          -- its expiry leaves its units free from that instant. The range of
          -- ids is an index condition in each pass (a CASE around the whole
          -- comparison made it a filter: the first pass read every unit
          -- below the start). Each unit's bookings are looked up by
          -- = any(array[unit]) and the legs overlap written out, so that the
          -- probe takes the B-tree on seat_id: 3 pages, where the exclusion
          -- constraint's GiST index read 7, and about 50 with `legs && legs`.
          if v_cands is null then
            select array_agg(u.id) into v_new
            from (select s.id from app.seats s
                  where s.show_id = claim_area_units.show_id and s.section = area and s.standing
                    and s.id >= case when v_pass = 1 then v_start else v_area.first_unit_id end
                    and s.id < case when v_pass = 1 then v_area.last_unit_id + 1 else v_start end
                    and s.id <> all(v_got)
                    and not exists (
                      select 1 from app.booking_seats bs
                      where bs.seat_id = any(array[s.id]) and bs.active
                        and lower(bs.legs) < upper(claim_area_units.legs) and lower(claim_area_units.legs) < upper(bs.legs)
                        and (bs.held_until is null or bs.held_until > clock_timestamp()))
                  order by s.id
                  limit quantity - cardinality(v_got)
                  for no key update skip locked) u;
          else
            select array_agg(u.id) into v_new
            from (select s.id from app.seats s
                  where s.id = any(v_cands)
                    and s.id >= case when v_pass = 1 then v_start else v_area.first_unit_id end
                    and s.id < case when v_pass = 1 then v_area.last_unit_id + 1 else v_start end
                    and s.id <> all(v_got)
                  order by s.id
                  limit quantity - cardinality(v_got)
                  for no key update skip locked) u;
          end if;
          exit when v_new is null;
          -- Under the locks, a new statement: booked by a transaction that
          -- committed between this statement's snapshot and our lock?
          v_taken := app.taken_seats(v_new, legs, clock_timestamp());
          v_got := v_got || array(select x from unnest(v_new) x where x <> all(coalesce(v_taken, '{}')));
          if v_taken is not null and v_cands is not null then
            v_cands := array(select x from unnest(v_cands) x where x <> all(v_taken));
          end if;
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
    -- area, then try again, among the free units only. Otherwise the area
    -- is full. Which one: a random one this attempt did not hold, so the
    -- bookers that wait spread over the lockers instead of all queueing on
    -- one and waking one by one.
    v_start := v_area.first_unit_id + floor(random() * (v_area.last_unit_id - v_area.first_unit_id + 1))::bigint;
    v_cands := app.free_units(v_area.first_unit_id, v_area.last_unit_id, legs, clock_timestamp(), v_start, quantity + 4);
    exit when coalesce(cardinality(v_cands), 0) < quantity;
    v_wait := (select x from unnest(v_cands) x where x <> all(v_got) order by random() limit 1);
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

CREATE OR REPLACE FUNCTION app.create_booking(show_id uuid, request jsonb, idempotency_key text, max_seats integer, hold_default_seconds integer, hold_max_seconds integer, client_address text, hold_limits jsonb, best_candidates bigint[], best_start integer) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
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
-- best_candidates and best_start: blocks best_candidates ranked once for
-- this request and others asking at the same moment, and this request's
-- place among them (see pick_best_seats); null, the function ranks itself.
--
-- Returns {"booking": <booking>, "replayed": <bool>}; the booking carries its
-- secret, which is stored only as a hash. A booking whose seats or areas were
-- not available is recorded as failed and returned, not raised.
declare
  v_show_id uuid := create_booking.show_id;
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
  v_named app.seat_request;
  v_named_count int;
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
  v_requested := coalesce(v_quantity, jsonb_array_length(request->'seatIds'), jsonb_array_length(request->'seatLabels'), 0);
  -- Only an order with areas pays for their checks: each is a statement.
  if v_areas is not null then
    if (select count(*) <> count(distinct a->>'name') from jsonb_array_elements(v_areas) a) then
      perform app.raise_problem('BKREQ', 'An area is named more than once',
        jsonb_build_object('errors', jsonb_build_array(jsonb_build_object('name', 'body.areas', 'reason', 'must name each area once'))));
    end if;
    v_requested := v_requested + coalesce((select sum((a->>'quantity')::int) from jsonb_array_elements(v_areas) a), 0);
  end if;
  -- Each test is an expression PL/pgSQL prepares again in every
  -- transaction: a request that passes pays for the outer ones only.
  if v_requested not between 1 and max_seats then
    if v_requested < 1 then
      perform app.raise_problem('BKREQ', 'A booking needs at least one seat or admission');
    end if;
    perform app.raise_problem('SEATN', format('A booking may have at most %s seats and admissions', max_seats),
      jsonb_build_object('maxSeats', max_seats));
  end if;
  if v_hold or request ? 'holdSeconds' then
    if not v_hold then
      perform app.raise_problem('BKREQ', 'holdSeconds goes with "hold": true');
    end if;
    if v_hold_seconds not between 1 and hold_max_seconds then
      perform app.raise_problem('BKREQ', format('A hold lasts between 1 and %s seconds', hold_max_seconds),
        jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
          'name', 'body.holdSeconds', 'reason', format('must be at most %s', hold_max_seconds)))));
    end if;
  end if;

  -- Idempotency: a replay answers what the first request did, with the
  -- same secret, derived again from the key.
  -- Without a key there is nothing to replay, and the secret is random.
  if idempotency_key is not null then
    v_replay := app.idempotency_begin(idempotency_key, 'create-booking', request);
    v_secret := app.booking_secret(idempotency_key);
    if v_replay is not null then
      return jsonb_build_object('booking', v_replay || jsonb_build_object('secret', v_secret), 'replayed', true);
    end if;
  else
    v_secret := app.booking_secret(null);
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
    -- One statement, a handful of plan nodes: the named seats by either
    -- unique index (a bitmap OR of the two), each seat's price by its
    -- category, and whether a booking holds it.
    v_named := jsonb_populate_record(null::app.seat_request, request);
    select array_agg(s.id order by s.id), count(*),
           array_agg(s.id order by s.id) filter (where not s.for_sale or t.taken),
           jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label, 'section', s.section, 'row', s.row_label,
                                        'number', s.number, 'category', s.category,
                                        'price', c.price * (upper(v_legs) - lower(v_legs))) order by s.id),
           jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id) filter (where not s.for_sale or t.taken)
    into v_seats, v_found, v_taken, v_seats_json, v_unavailable_json
    from app.seats s
    join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
    -- Taken for good: by a booking row no transaction is changing (xmax
    -- 0). One being cancelled, confirmed or expired right now may be free
    -- once that commits: those seats go the locking way, and wait for it,
    -- as every booker did before this look. The seat is matched with
    -- = any(array[...]) so that the probe takes the B-tree on seat_id,
    -- which answers in 3 pages: the exclusion constraint's GiST index,
    -- which the planner prefers for a plain equality, read 52.
    left join lateral (
      select true as taken from app.booking_seats bs
      where bs.seat_id = any(array[s.id]) and bs.active
        and lower(bs.legs) < upper(v_legs) and lower(v_legs) < upper(bs.legs)
        and (bs.held_until is null or bs.held_until > v_now) and bs.xmax = '0'::xid
      limit 1) t on true
    -- A standing unit is not a seat to name: areas are booked by quantity.
    where s.show_id = v_show_id and not s.standing
      and (s.id = any(v_named."seatIds") or s.label = any(v_named."seatLabels"));
    v_named_count := cardinality(coalesce(v_named."seatIds"::text[], v_named."seatLabels"));
    if v_found <> v_named_count then
      if v_named_count <> (select count(distinct x) from unnest(coalesce(v_named."seatIds"::text[], v_named."seatLabels")) x) then
        perform app.raise_problem('SEATD', 'The same seat is named more than once');
      end if;
      perform app.raise_problem('SEATX', 'Some seats do not exist in this show',
        jsonb_build_object('unknownSeats', coalesce(
          (select jsonb_agg(x order by x) from unnest(v_named."seatIds") x
            where not exists (select 1 from app.seats s where s.id = x and s.show_id = v_show_id and not s.standing)),
          (select jsonb_agg(x order by x) from unnest(v_named."seatLabels") x
            where not exists (select 1 from app.seats s where s.label = x and s.show_id = v_show_id and not s.standing)))));
    end if;
    if v_taken is null then
      -- Lock the seat rows in ascending id order: bookings of overlapping
      -- seats queue on the first seat they share and can never deadlock.
      -- FOR NO KEY UPDATE conflicts with itself and with nothing else.
      perform 1 from app.seats s where s.id = any(v_seats) order by s.id for no key update;
      -- Under the locks, a new statement sees every booking committed
      -- before they were granted. The legs overlap is written out, here and
      -- below, so that the generic plan takes the B-tree on seat_id: with
      -- `legs && v_legs` it may take the exclusion constraint's GiST index
      -- by the overlap alone, and read every active booking of every show.
      v_now := clock_timestamp();
      select array_agg(distinct bs.seat_id order by bs.seat_id) filter (where bs.held_until is null or bs.held_until > v_now),
             coalesce(bool_or(bs.held_until <= v_now), false)
      into v_taken, v_lapsed
      from app.booking_seats bs
      where bs.seat_id = any(v_seats) and bs.active
        and lower(bs.legs) < upper(v_legs) and lower(v_legs) < upper(bs.legs);
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
      (request->>'maxPrice')::bigint, coalesce((request->>'allowSeparate')::boolean, false), v_legs,
      best_candidates, best_start);
    if v_seats is null then
      v_reason := 'not-enough-seats';
    else
      v_seats_json := app.seats_json(v_seats, v_legs);
      v_now := clock_timestamp();
      select coalesce(bool_or(bs.held_until <= v_now), false) into v_lapsed
      from app.booking_seats bs
      where bs.seat_id = any(v_seats) and bs.active
        and lower(bs.legs) < upper(v_legs) and lower(v_legs) < upper(bs.legs);
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
      where bs.seat_id = any(v_units) and bs.active
        and lower(bs.legs) < upper(v_legs) and lower(v_legs) < upper(bs.legs);
    end if;
    if v_lapsed then
      perform 1 from app.bookings b
      where b.id in (select bs.booking_id from app.booking_seats bs
                     where bs.seat_id = any(v_claim) and bs.active
                       and lower(bs.legs) < upper(v_legs) and lower(v_legs) < upper(bs.legs))
        and b.status = 'pending' and b.expires_at <= v_now
      order by b.id
      for update;
      update app.bookings b set status = 'expired', updated_at = v_now
      where b.id in (select bs.booking_id from app.booking_seats bs
                     where bs.seat_id = any(v_claim) and bs.active
                       and lower(bs.legs) < upper(v_legs) and lower(v_legs) < upper(bs.legs))
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
    -- The standing areas' ledger of taken units, in the same transaction,
    -- with the unit after the last one taken: where the next booker of a
    -- nearly full area starts to look.
    if cardinality(v_units) > 0 then
      insert into app.area_ledger (show_id, area, taken, near)
      select v_show_id, a.name, count(*), max(u) + 1
      from unnest(v_units) u
      join app.areas a on a.show_id = v_show_id and u between a.first_unit_id and a.last_unit_id
      group by a.name;
    end if;
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
    'confirmedAt', case when v_status = 'confirmed' then v_now end,
    'secret', v_secret));
  if v_show.kind = 'trip' then
    v_result := v_result || jsonb_strip_nulls(jsonb_build_object(
      'fromStop', (select st.name from app.show_stops st where st.show_id = v_show_id and st.position = lower(v_legs)),
      'toStop', (select st.name from app.show_stops st where st.show_id = v_show_id and st.position = upper(v_legs))));
  end if;
  -- The stored replay never holds the secret: a replay derives it again.
  if idempotency_key is not null then
    perform app.idempotency_end(idempotency_key, v_result - 'secret');
  end if;
  return jsonb_build_object('booking', v_result, 'replayed', false);
end;
$$;

CREATE OR REPLACE FUNCTION app.tg_bookings_release_seats() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog'
    AS $$
begin
  -- Freeing needs no seat lock: a booker that still sees the old row
  -- active either treats it as taken (it was, a moment ago) or as a lapsed hold.
  if new.status in ('cancelled', 'expired') then
    -- Freed units leave the standing areas' ledger in the same statement,
    -- the first of them noted as where free units are.
    with released as (
      update app.booking_seats bs set active = false, held_until = null
      where bs.booking_id = new.id and bs.active
      returning bs.seat_id
    )
    insert into app.area_ledger (show_id, area, taken, near)
    select new.show_id, a.name, -count(*), min(r.seat_id)
    from released r
    join app.areas a on a.show_id = new.show_id and r.seat_id between a.first_unit_id and a.last_unit_id
    group by a.name;
  elsif new.status = 'confirmed' then
    update app.booking_seats bs set held_until = null
    where bs.booking_id = new.id and bs.held_until is not null;
  end if;
  return null;
end;
$$;

CREATE OR REPLACE FUNCTION app.sweep(batch integer DEFAULT 1000, keep_keys interval DEFAULT '24:00:00'::interval) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog'
    AS $$
-- Records lapsed holds as expired (their seats are already free to bookers)
-- and forgets idempotency keys older than keep_keys. Never waits for a
-- booker: a hold whose seats are locked is left for the next sweep, or for
-- the booker, which expires it itself.
declare
  v_id uuid;
  v_expired int := 0;
  v_purged int;
  v_area record;
begin
  for v_id in
    select b.id from app.bookings b
    where b.status = 'pending' and b.expires_at <= clock_timestamp()
    order by b.expires_at
    limit batch
  loop
    begin
      perform 1 from app.seats s
      where s.id in (select bs.seat_id from app.booking_seats bs where bs.booking_id = v_id and bs.active)
      order by s.id
      for no key update nowait;
      update app.bookings b set status = 'expired', updated_at = clock_timestamp()
      where b.id = v_id and b.status = 'pending' and b.expires_at <= clock_timestamp();
      if found then
        v_expired := v_expired + 1;
      end if;
    exception when lock_not_available then
      null;
    end;
  end loop;
  -- Each standing area's ledger, folded into one row once it has grown:
  -- the rows no other sweep is folding (SKIP LOCKED), deleted and summed in
  -- one statement, which keeps the latest note of where free units are.
  -- Bookings only insert, so none waits for this.
  for v_area in
    select l.show_id, l.area from app.area_ledger l group by l.show_id, l.area having count(*) > 32
  loop
    with folded as (
      delete from app.area_ledger l
      where l.ctid = any(array(select x.ctid from app.area_ledger x
                               where x.show_id = v_area.show_id and x.area = v_area.area
                               for update skip locked))
      returning l.id, l.taken, l.near
    )
    insert into app.area_ledger (show_id, area, taken, near)
    select v_area.show_id, v_area.area, sum(taken), (array_agg(near order by id desc) filter (where near is not null))[1]
    from folded having count(*) > 0;
  end loop;
  delete from app.idempotency_keys k where k.created_at < clock_timestamp() - keep_keys;
  get diagnostics v_purged = row_count;
  return jsonb_build_object('expired', v_expired, 'keysPurged', v_purged);
end;
$$;

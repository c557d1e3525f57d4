--! Previous: sha1:7c22d05d93bb176fc89590fd54f11a39d4ff0a13
--! Hash: sha1:cb2f8b9ebfd206f9c2d122dbc1c85ffd51c9a4a9
--! Message: taken_seats and the free-unit probes of claim_area_units look a seat's bookings up by the seat alone

-- A unit's or a seat's active bookings are looked up by the seat alone,
-- with the legs overlap written out by its bounds, as create_booking does
-- since the previous migration. In taken_seats (best available, standing
-- areas) the generic plan took the exclusion constraint's GiST index by
-- `legs && legs` alone: 105 pages and 1.5 ms for 3 seats among 7,861 active
-- booking seats, growing with every booking of every show. In
-- claim_area_units each free-unit probe searched the GiST index by the unit
-- and the overlap: about 50 pages a probe, against 3 by the unit alone.
-- Legs are never empty nor unbounded, so the two tests agree.

create or replace function app.taken_seats(seat_ids bigint[], legs int4range, at timestamp with time zone) RETURNS bigint[]
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
declare
  v_taken bigint[];
begin
  select array_agg(t.id order by t.id) into v_taken
  from (
    select s.id from app.seats s where s.id = any(taken_seats.seat_ids) and not s.for_sale
    union
    select bs.seat_id from app.booking_seats bs
    where bs.seat_id = any(taken_seats.seat_ids) and bs.active
      and lower(bs.legs) < upper(taken_seats.legs) and lower(taken_seats.legs) < upper(bs.legs)
      and (bs.held_until is null or bs.held_until > taken_seats.at)
  ) t;
  return v_taken;
end;
$$;

create or replace function app.claim_area_units(show_id uuid, area text, quantity integer, legs int4range) RETURNS bigint[]
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
          -- its expiry leaves its units free from that instant. The legs
          -- overlap is written out in each probe so that the GiST index is
          -- searched by the unit alone: with `legs && legs` in the index
          -- condition as well it read about 50 pages a probe, not 3.
          select array_agg(u.id) into v_new
          from (select s.id from app.seats s
                where s.show_id = claim_area_units.show_id and s.section = area and s.standing
                  and (case when v_pass = 1 then s.id >= v_start else s.id < v_start end)
                  and s.id <> all(v_got)
                  and not exists (
                    select 1 from app.booking_seats bs
                    where bs.seat_id = s.id and bs.active
                      and lower(bs.legs) < upper(claim_area_units.legs) and lower(claim_area_units.legs) < upper(bs.legs)
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
              where bs.seat_id = s.id and bs.active
                and lower(bs.legs) < upper(claim_area_units.legs) and lower(claim_area_units.legs) < upper(bs.legs)
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
        where bs.seat_id = s.id and bs.active
          and lower(bs.legs) < upper(claim_area_units.legs) and lower(claim_area_units.legs) < upper(bs.legs)
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

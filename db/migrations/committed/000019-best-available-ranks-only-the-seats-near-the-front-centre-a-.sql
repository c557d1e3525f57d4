--! Previous: sha1:c9ca653eba1e0990f20cd4e80fc0906f4cb6c53b
--! Hash: sha1:c8a7a31188945584bed27cb9f0fc133494a53319
--! Message: Best available ranks only the seats near the front-centre: a radius just beyond where the taken seats end, each radius ranked once; a candidate booked since is passed over before its row lock

-- Best available ranks only the seats near the front-centre: a radius
-- just beyond the nearest free block instead of the first rows, each
-- radius ranked once; a candidate booked since is passed over before its
-- row lock.

create or replace function app.seat_blocks(show_id uuid, quantity integer, section text, category text, max_price bigint, legs int4range, at timestamp with time zone, max_rows integer) RETURNS TABLE(seat_ids bigint[], orphan boolean, distance double precision, section_index integer)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
begin
  return query
  -- Every run of `quantity` adjacent free seats in one row (when max_rows
  -- is given: in the first max_rows rows of each section, and no farther
  -- than max_rows plus the block and two seats from the row's centre;
  -- runs cut at that edge may be misjudged, but only blocks farther than
  -- max_rows from the front-centre), best first:
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
      -- Within max_rows of the row's centre too, with room for the block
      -- and the two seats beside it that decide whether it leaves an orphan.
      and (max_rows is null or abs(r.seat_index - r.last_index / 2.0) <= max_rows + seat_blocks.quantity + 2)
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
         -- In float8 throughout: the same values as numeric (squares of
         -- halves are exact), without numeric arithmetic on every block.
         sqrt(power(b.row_index, 2)
              + power((b.first_index + (seat_blocks.quantity - 1) / 2.0 - b.last_index / 2.0)::float8, 2)),
         b.section_index
  from blocks b
  where cardinality(b.following) = seat_blocks.quantity
  order by 2, b.section_index, 3, b.row_index, b.first_index;
end;
$$;

comment on FUNCTION app.seat_blocks(show_id uuid, quantity integer, section text, category text, max_price bigint, legs int4range, at timestamp with time zone, max_rows integer) IS 'Candidate blocks of adjacent free seats for best-available selection, best first, within max_rows of the front-centre when given.';

create or replace function app.best_blocks(show_id uuid, quantity integer, section text, category text, max_price bigint, legs int4range) RETURNS TABLE(seat_ids bigint[])
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
-- The candidate blocks of seat_blocks, best first, without ranking a whole
-- large section when the seats near the front-centre settle it. A block
-- at distance d from the front-centre lies in the first d rows and within
-- d of its row's centre, so when the best block within radius w is
-- orphan-free, in the first section that could have one, and no farther
-- than w, no block outside that radius can beat it. Otherwise the radius
-- widens, and at last the whole section is ranked. Any radius gives the
-- same first block; the first one is only chosen to be cheap: just beyond
-- where the free seats should begin, since ranking the taken seats inside
-- is wasted work and ranking far beyond it too.
declare
  v_first_section int;
  v_radius float8;
  v_window int;
  v_block record;
  v_first boolean;
begin
  select min(s.section_index) into v_first_section
  from app.seats s
  where s.show_id = best_blocks.show_id and s.for_sale
    and (best_blocks.section is null or s.section = best_blocks.section)
    and (best_blocks.category is null or s.category = best_blocks.category);
  -- Seats are taken from the front-centre outwards, roughly a half disc:
  -- its radius, from how many seats of the show are taken, is where the
  -- free blocks begin. Counting is one index scan; finding the nearest
  -- free block would rank the section again.
  select sqrt(2 * count(*) / pi()) into v_radius
  from app.booking_seats bs
  where bs.show_id = best_blocks.show_id and bs.active and bs.legs && best_blocks.legs;
  foreach v_window in array array[4, 12, 36] loop
    v_window := ceil(v_radius)::int + quantity + v_window;
    v_first := true;
    for v_block in
      select b.seat_ids, b.orphan, b.distance, b.section_index
      from app.seat_blocks(best_blocks.show_id, quantity, section, category, max_price, legs, clock_timestamp(), v_window) b
    loop
      exit when v_first and (v_block.orphan or v_block.distance > v_window or v_block.section_index <> v_first_section);
      v_first := false;
      seat_ids := v_block.seat_ids;
      return next;
    end loop;
    if not v_first then
      return;
    end if;
  end loop;
  return query
    select b.seat_ids from app.seat_blocks(best_blocks.show_id, quantity, section, category, max_price, legs, clock_timestamp(), null) b;
end;
$$;

comment on function app.best_blocks(uuid, integer, text, text, bigint, int4range) is
  'Candidate blocks for best-available selection, best first, searching outward from the front-centre.';

create or replace function app.pick_best_seats(show_id uuid, quantity integer, section text, category text, max_price bigint, allow_separate boolean, legs int4range) RETURNS bigint[]
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
-- Why SKIP LOCKED: concurrent best-available requests want the same best
-- seats. Each tries the best candidate block whose seats nobody is locking
-- and takes the next best instead of queueing. A failed attempt runs in a
-- subtransaction whose rollback releases the seats it did lock. Only when
-- every candidate is locked by others does a request wait, for the best one.
-- A candidate booked since the ranking was read (most of them, when 64
-- requests rank at once and commit one after another) is passed over
-- before its lock: a lock and a subtransaction each write WAL, on the same
-- few heap pages for every request.
declare
  v_candidate record;
  v_bad bigint[];
  v_best bigint[];
  v_got bigint[];
  v_round int;
  v_picked bigint[];
begin
  for v_round in 1..20 loop
    v_bad := '{}';
    v_best := null;
    v_picked := '{}';
    for v_candidate in
      select b.seat_ids from app.best_blocks(pick_best_seats.show_id, quantity, section, category, max_price, legs) b
      union all
      -- Seats one by one, nearest first (an orphan no longer matters), when
      -- the client accepts separate seats and no block of them is left.
      (select b.seat_ids from app.seat_blocks(pick_best_seats.show_id, 1, section, category, max_price, legs, clock_timestamp(), null) b
       where allow_separate
       order by b.distance)
    loop
      continue when v_candidate.seat_ids && v_bad or v_candidate.seat_ids && v_picked;
      v_best := coalesce(v_best, v_candidate.seat_ids);
      -- Booked since the candidates were read? Seen without a lock or a
      -- subtransaction: under contention most stale candidates are these.
      v_got := app.taken_seats(v_candidate.seat_ids, legs, clock_timestamp());
      if v_got is not null then
        v_bad := v_bad || v_got;
        continue;
      end if;
      begin
        select array_agg(l.id order by l.id) into v_got
        from (select s.id from app.seats s where s.id = any(v_candidate.seat_ids)
              order by s.id for no key update skip locked) l;
        if coalesce(cardinality(v_got), 0) < cardinality(v_candidate.seat_ids) then
          v_bad := v_bad || array(select unnest(v_candidate.seat_ids) except select unnest(v_got));
          raise exception using errcode = 'BKSKP';
        end if;
        -- Under the locks, a fresh look: booked since the candidates were read?
        v_got := app.taken_seats(v_got, legs, clock_timestamp());
        if v_got is not null then
          v_bad := v_bad || v_got;
          raise exception using errcode = 'BKSKP';
        end if;
        v_picked := v_picked || v_candidate.seat_ids;
      exception when sqlstate 'BKSKP' then
        null;
      end;
      if cardinality(v_picked) >= quantity then
        return (select array_agg(x order by x) from unnest(v_picked[1:quantity]) x);
      end if;
    end loop;
    -- Not enough seats: give back the separate seats taken so far (they
    -- stay locked until commit, but the booking will not claim them).
    exit when v_best is null or cardinality(v_picked) > 0;
    -- Every candidate had a seat locked by another booker: wait for the best
    -- one. No seat lock is held here, so the wait cannot close a cycle.
    begin
      select array_agg(l.id order by l.id) into v_got
      from (select s.id from app.seats s where s.id = any(v_best) order by s.id for no key update) l;
      if app.taken_seats(v_got, legs, clock_timestamp()) is null and cardinality(v_got) >= quantity then
        return v_got;
      end if;
      raise exception using errcode = 'BKSKP';
    exception when sqlstate 'BKSKP' then
      null;
    end;
  end loop;
  return null;
end;
$$;

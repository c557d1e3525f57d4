--! Previous: sha1:c18a7096af382b389db5287c008397c67c5c03b0
--! Hash: sha1:ea8c6a8d0727d861a908e7f26332f5ef697802c0
--! Message: Shared best-available candidates are checked for seats booked since in one statement, not one a candidate

-- Shared best-available candidates are checked for seats booked since in
-- one statement, not one a candidate. The bookers sharing a ranking each
-- take their own block, but the rankings of other quantities (a booker of
-- 3 and one of 2 both start at the front-centre) and named-seat bookers
-- take some of a booker's candidates first: the committed bench counted 45
-- statements a best-available booking, most of them these checks.

create or replace function app.pick_best_seats(show_id uuid, quantity integer, section text, category text, max_price bigint, allow_separate boolean, legs int4range, candidates bigint[], start integer) RETURNS bigint[]
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
--
-- candidates: blocks ranked once (best_candidates) for every booker who
-- asked at the same moment, none sharing a seat; start: this booker's place
-- among them. The first round tries them from there on, so concurrent
-- bookers neither rank the show each nor all reach for the same block
-- first; later rounds rank afresh, as does a booker without candidates.
declare
  v_candidate record;
  v_bad bigint[];
  v_best bigint[];
  v_got bigint[];
  v_round int;
  v_picked bigint[];
  v_blocks bigint[];
begin
  for v_round in 1..20 loop
    v_bad := '{}';
    v_best := null;
    v_picked := '{}';
    -- The blocks as a two-dimensional array, a row per block, best first.
    if v_round = 1 and candidates is not null then
      v_blocks := candidates[greatest(start, 1):];
      -- Ranked a moment ago for several bookers: those booked since, in one
      -- look instead of one a candidate.
      v_bad := coalesce(app.taken_seats(v_blocks, legs, clock_timestamp()), '{}');
    else
      v_blocks := array(select b.seat_ids from app.best_blocks(pick_best_seats.show_id, quantity, section, category, max_price, legs) b);
    end if;
    for v_candidate in
      select array(select unnest(v_blocks[i:i])) as seat_ids from generate_subscripts(v_blocks, 1) i
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

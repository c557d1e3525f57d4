--! Previous: sha1:9a475b14024f72764a4b40dde81debd863a96368
--! Hash: sha1:ba91fcc17c67e5ce544583cd367d6895dd1f706f
--! Message: Best available searches the front rows first

-- Best available without ranking a whole large section: candidate blocks
-- are searched in the front rows first, widening only when the front rows
-- cannot settle which block is best (app.best_blocks). A 10,000-seat
-- section no longer costs every request a pass over all its seats.

drop function if exists app.best_blocks(uuid, int, text, text, bigint, int4range);
drop function if exists app.seat_blocks(uuid, int, text, text, bigint, int4range, timestamptz);
drop function if exists app.seat_blocks(uuid, int, text, text, bigint, int4range, timestamptz, int);

create function app.seat_blocks(
  show_id uuid, quantity int, section text, category text, max_price bigint, legs int4range, at timestamptz, max_rows int)
returns table (seat_ids bigint[], orphan boolean, distance float8, section_index int)
language sql stable
set search_path = pg_catalog
as $$
  -- Every run of `quantity` adjacent free seats in one row (in the first
  -- max_rows rows of each section, when given), best first:
  -- blocks that leave no single orphan seat beside them, then earlier
  -- sections, then nearest the front-centre of the section.
  with row_seats as (
    select s.id, s.section_index, s.row_index, s.seat_index, s.for_sale, s.category, c.price,
           max(s.seat_index) over (partition by s.section_index, s.row_index) as last_index
    from app.seats s
    join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
    where s.show_id = seat_blocks.show_id
      and (seat_blocks.section is null or s.section = seat_blocks.section)
      and (max_rows is null or s.row_index < max_rows)
  ), free as (
    select r.*, r.seat_index - row_number() over (partition by r.section_index, r.row_index order by r.seat_index) as run
    from row_seats r
    where r.for_sale
      and (seat_blocks.category is null or r.category = seat_blocks.category)
      and (seat_blocks.max_price is null or r.price <= seat_blocks.max_price)
      and not exists (
        select 1 from app.booking_seats bs
        where bs.show_id = seat_blocks.show_id and bs.seat_id = r.id and bs.active and bs.legs && seat_blocks.legs
          and (bs.held_until is null or bs.held_until > seat_blocks.at))
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
$$;

comment on function app.seat_blocks(uuid, int, text, text, bigint, int4range, timestamptz, int) is
  'Candidate blocks of adjacent free seats for best-available selection, best first, within the first max_rows rows when given.';

create function app.best_blocks(
  show_id uuid, quantity int, section text, category text, max_price bigint, legs int4range)
returns table (seat_ids bigint[])
language plpgsql stable
set search_path = pg_catalog
set plan_cache_mode = force_generic_plan
as $$
-- The candidate blocks of seat_blocks, best first, without ranking a whole
-- large section when the front rows settle it. Every seat of row r is at
-- distance >= r from the front-centre, so when the best block among the
-- first w rows is orphan-free, in the first section that could have one,
-- and no farther than w, no block further back can beat it. Otherwise the
-- window widens: 8 rows, 32, then all.
declare
  v_first_section int;
  v_window int;
  v_best record;
begin
  select min(s.section_index) into v_first_section
  from app.seats s
  where s.show_id = best_blocks.show_id and s.for_sale
    and (best_blocks.section is null or s.section = best_blocks.section)
    and (best_blocks.category is null or s.category = best_blocks.category);
  foreach v_window in array array[8, 32] loop
    select b.orphan, b.distance, b.section_index into v_best
    from app.seat_blocks(best_blocks.show_id, quantity, section, category, max_price, legs, clock_timestamp(), v_window) b
    limit 1;
    if found and not v_best.orphan and v_best.distance <= v_window and v_best.section_index = v_first_section then
      return query
        select b.seat_ids from app.seat_blocks(best_blocks.show_id, quantity, section, category, max_price, legs, clock_timestamp(), v_window) b;
      return;
    end if;
  end loop;
  return query
    select b.seat_ids from app.seat_blocks(best_blocks.show_id, quantity, section, category, max_price, legs, clock_timestamp(), null) b;
end;
$$;
comment on function app.best_blocks(uuid, int, text, text, bigint, int4range) is
  'Candidate blocks for best-available selection, best first, searching front rows first.';

create or replace function app.pick_best_seats(
  show_id uuid, quantity int, section text, category text, max_price bigint, allow_separate boolean, legs int4range)
returns bigint[]
language plpgsql volatile
set search_path = pg_catalog
-- create or replace resets SET options: keep migration 8's generic plans.
set plan_cache_mode = force_generic_plan
as $$
-- Why SKIP LOCKED: concurrent best-available requests want the same best
-- seats. Each tries the best candidate block whose seats nobody is locking
-- and takes the next best instead of queueing. A failed attempt runs in a
-- subtransaction whose rollback releases the seats it did lock. Only when
-- every candidate is locked by others does a request wait, for the best one.
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

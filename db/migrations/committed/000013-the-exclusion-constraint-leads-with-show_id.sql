--! Previous: sha1:63da3950328bd8a6280d1b877842c71901a63fc0
--! Hash: sha1:9e48a96eb6375b733a8e550f925482625fb93771
--! Message: The exclusion constraint leads with show_id

-- The exclusion constraint leads with show_id. It forbids exactly what it
-- did (a seat belongs to one show), but its GiST index, the one planners
-- pick for "this show's active seats over these legs", now holds the show
-- as its first key: the seat map and best available read that show's
-- entries instead of every show's (27,193 of them in a busy test database,
-- half the time of a 20,000-seat map). seat_blocks drops the workaround
-- that kept its plan off the old index.

alter table app.booking_seats drop constraint if exists booking_seats_no_double_booking;
alter table app.booking_seats add constraint booking_seats_no_double_booking
  exclude using gist (show_id with =, seat_id with =, legs with &&) where (active);

create or replace function app.seat_blocks(
  show_id uuid, quantity int, section text, category text, max_price bigint, legs int4range, at timestamptz, max_rows int)
returns table (seat_ids bigint[], orphan boolean, distance float8, section_index int)
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
    where s.show_id = seat_blocks.show_id
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

comment on function app.seat_blocks(uuid, int, text, text, bigint, int4range, timestamptz, int) is
  'Candidate blocks of adjacent free seats for best-available selection, best first, within the first max_rows rows when given.';

--! Previous: sha1:c9127941825729ed8b729c199e80a6fb38255dca
--! Hash: sha1:9a475b14024f72764a4b40dde81debd863a96368
--! Message: Best available reads only the show's booking seats

-- Best available looked for taken seats among the booking seats of every
-- show (a scan that grows with all bookings ever made); it now reads only
-- the show's active ones, through booking_seats_active_show_idx.

create or replace function app.seat_blocks(
  show_id uuid, quantity int, section text, category text, max_price bigint, legs int4range, at timestamptz)
returns table (seat_ids bigint[], orphan boolean, distance float8)
language sql stable
set search_path = pg_catalog
as $$
  -- Every run of `quantity` adjacent free seats in one row, best first:
  -- blocks that leave no single orphan seat beside them, then earlier
  -- sections, then nearest the front-centre of the section.
  with row_seats as (
    select s.id, s.section_index, s.row_index, s.seat_index, s.for_sale, s.category, c.price,
           max(s.seat_index) over (partition by s.section_index, s.row_index) as last_index
    from app.seats s
    join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
    where s.show_id = seat_blocks.show_id
      and (seat_blocks.section is null or s.section = seat_blocks.section)
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
              + power(b.first_index + (seat_blocks.quantity - 1) / 2.0 - b.last_index / 2.0, 2))
  from blocks b
  where cardinality(b.following) = seat_blocks.quantity
  order by 2, b.section_index, 3, b.row_index, b.first_index;
$$;

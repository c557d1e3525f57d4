--! Previous: sha1:81b9a037fc145c929ad1e6fe4624313b7413963a
--! Hash: sha1:c9127941825729ed8b729c199e80a6fb38255dca
--! Message: An admin listing of a show's bookings

-- The bookings of a show, for the box office: an admin listing, oldest
-- first, by keyset on (created_at, id).

drop function if exists app.list_show_bookings(uuid, app.booking_status, timestamptz, uuid, int);

create function app.list_show_bookings(
  show_id uuid,
  status app.booking_status default null,
  after_created_at timestamptz default null,
  after_id uuid default null,
  page_size int default 50
)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  with page as (
    select b.id, b.created_at
    from app.bookings b
    where b.show_id = list_show_bookings.show_id
      and (list_show_bookings.status is null or b.status = list_show_bookings.status)
      and (after_created_at is null or (b.created_at, b.id) > (after_created_at, after_id))
    order by b.created_at, b.id
    limit page_size + 1
  ), numbered as (
    select p.*, row_number() over (order by p.created_at, p.id) as n from page p
  )
  select jsonb_build_object(
    'items', coalesce(jsonb_agg(app.booking_json(x.id) order by x.n) filter (where x.n <= page_size), '[]'),
    'next', case when count(*) > page_size then (
      select jsonb_build_object('at', y.created_at, 'id', y.id) from numbered y where y.n = page_size) end)
  from numbered x
  having exists (select 1 from app.shows s where s.id = list_show_bookings.show_id);
$$;
comment on function app.list_show_bookings(uuid, app.booking_status, timestamptz, uuid, int) is
  'One page of a show''s bookings, oldest first, with the key of the last when more follow; null when there is no such show.';

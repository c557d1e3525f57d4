-- Helpers for the isolation specs: deterministic outputs (statuses, labels,
-- SQLSTATEs), never the random ids or timestamps.
create schema if not exists iso;

create or replace function iso.new_show(name text, stops jsonb default null)
returns uuid
language sql volatile
as $$
  select (app.create_show(jsonb_strip_nulls(jsonb_build_object(
    'kind', case when stops is null then 'show' else 'trip' end,
    'name', name, 'venue', 'Isolation', 'currency', 'EUR',
    'startsAt', case when stops is null then '2030-01-01T20:00:00Z' end,
    'stops', stops,
    'categories', jsonb_build_array(jsonb_build_object('code', 'standard', 'price', 1000)),
    'sections', jsonb_build_array(jsonb_build_object('name', 'Stalls', 'rows',
      jsonb_build_array(jsonb_build_object('label', 'A', 'seats', 4, 'category', 'standard'))))
  )))->>'id')::uuid;
$$;

-- A booking's status, or the error it raised.
create or replace function iso.book(show uuid, labels text[], from_stop text default null, to_stop text default null, hold boolean default false)
returns text
language plpgsql volatile
as $$
declare
  v_result jsonb;
begin
  v_result := app.create_booking(jsonb_strip_nulls(jsonb_build_object(
    'showId', show, 'seatLabels', to_jsonb(labels), 'fromStop', from_stop, 'toStop', to_stop,
    'hold', case when hold then true end,
    'customer', jsonb_build_object('name', 'Isolation', 'email', 'iso@example.com'))));
  return v_result->'booking'->>'status';
end;
$$;

-- The outcome of a statement: ok, or its SQLSTATE and the booking status it names.
create or replace function iso.try(statement text)
returns text
language plpgsql volatile
as $$
declare
  v_state text;
  v_detail text;
begin
  execute statement;
  return 'ok';
exception when others then
  get stacked diagnostics v_state = returned_sqlstate, v_detail = pg_exception_detail;
  return 'error ' || v_state || coalesce(' ' || (v_detail::jsonb ->> 'bookingStatus'), '');
end;
$$;

-- Make a hold lapse now, as if its time had run out.
create or replace function iso.lapse(booking uuid)
returns void
language sql volatile
as $$
  update app.booking_seats set held_until = now() - interval '1 second' where booking_id = booking and active;
  update app.bookings set expires_at = now() - interval '1 second' where id = booking;
$$;

-- Who holds what: one row per active seat of the show.
create or replace function iso.seats(show uuid)
returns table (label text, status text, legs text)
language sql stable
as $$
  select s.label, b.status::text, bs.legs::text
  from app.booking_seats bs join app.seats s on s.id = bs.seat_id join app.bookings b on b.id = bs.booking_id
  where bs.show_id = show and bs.active
  order by s.label, lower(bs.legs);
$$;

-- A hold of labels from one client address, under the given hold limits:
-- its status, or the SQLSTATE and limit it ran into.
create or replace function iso.hold_as(show uuid, labels text[], client text, limits jsonb)
returns text
language plpgsql volatile
as $$
declare
  v_result jsonb;
  v_detail text;
begin
  v_result := app.create_booking(jsonb_build_object(
    'showId', show, 'seatLabels', to_jsonb(labels), 'hold', true,
    'customer', jsonb_build_object('name', 'Isolation', 'email', client || '@example.com')),
    null, 10, 600, 1800, client, limits);
  return v_result->'booking'->>'status';
exception when sqlstate 'HOLDL' then
  get stacked diagnostics v_detail = pg_exception_detail;
  return 'error HOLDL ' || (v_detail::jsonb ->> 'limitScope');
end;
$$;

-- A show with a standing area Floor of this capacity beside its seats.
create or replace function iso.new_concert(name text, capacity int)
returns uuid
language sql volatile
as $$
  select (app.create_show(jsonb_build_object(
    'kind', 'show', 'name', name, 'venue', 'Isolation', 'currency', 'EUR', 'startsAt', '2030-01-01T20:00:00Z',
    'categories', jsonb_build_array(jsonb_build_object('code', 'standard', 'price', 1000)),
    'sections', jsonb_build_array(jsonb_build_object('name', 'Stalls', 'rows',
      jsonb_build_array(jsonb_build_object('label', 'A', 'seats', 4, 'category', 'standard')))),
    'areas', jsonb_build_array(jsonb_build_object('name', 'Floor', 'category', 'standard', 'capacity', capacity))
  ))->>'id')::uuid;
$$;

-- A booking of admissions to Floor (and seats, when named): its status, or why it failed.
create or replace function iso.book_area(show uuid, quantity int, labels text[] default null)
returns text
language plpgsql volatile
as $$
declare
  v_result jsonb;
begin
  v_result := app.create_booking(jsonb_strip_nulls(jsonb_build_object(
    'showId', show, 'seatLabels', to_jsonb(labels),
    'areas', jsonb_build_array(jsonb_build_object('name', 'Floor', 'quantity', quantity)),
    'customer', jsonb_build_object('name', 'Isolation', 'email', 'iso@example.com'))));
  return concat_ws(' ', v_result->'booking'->>'status', v_result->'booking'->>'failureReason');
end;
$$;

-- How many of Floor's units are in active bookings, by booking status.
create or replace function iso.floor(show uuid)
returns table (status text, units bigint)
language sql stable
as $$
  select b.status::text, count(*)
  from app.booking_seats bs join app.seats s on s.id = bs.seat_id join app.bookings b on b.id = bs.booking_id
  where bs.show_id = show and bs.active and s.standing
  group by b.status order by 1;
$$;

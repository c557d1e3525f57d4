--! Previous: sha1:b7e543197a767db8980add7fc87e627fe030be4c
--! Hash: sha1:59ef3e85c223c7e67d0cea69725eeab24e1ca651
--! Message: Live seat availability: a seat event log in commit order, and the seat map as JSON text

-- Live seat availability: a transactional event log of seat changes,
-- published in commit order, and a seat map built as JSON text in one query.
--
-- Why events get their public position later: sequence values are handed
-- out at insert, but transactions commit in another order, so a reader that
-- resumes "after event 10" could miss an event 9 that commits afterwards.
-- Bookings only append events (in their own transaction, so a rolled-back
-- booking leaves none); app.sequence_events, one run at a time, gives
-- committed events their position in commit order and notifies listeners.
-- Booking transactions take no extra lock and send no NOTIFY (whose commit
-- lock would serialise them).

drop function if exists app.show_seats(uuid, text, text, text);
drop function if exists app.seat_map(uuid, text, text, text, text);
drop function if exists app.seat_map_json(uuid, text, text, text);
drop function if exists app.seat_map_version(uuid);
drop function if exists app.show_events(uuid, bigint, int);
drop function if exists app.sequence_events(int);
drop trigger if exists bookings_seat_events on app.bookings;
drop function if exists app.tg_bookings_seat_events();
drop table if exists app.seat_events;
drop sequence if exists app.seat_event_position_seq;

create sequence app.seat_event_position_seq;

create table app.seat_events (
  id bigint generated always as identity primary key,
  -- The public event id: commit order, set by app.sequence_events.
  position bigint unique,
  show_id uuid not null references app.shows on delete cascade,
  booking_id uuid not null references app.bookings on delete cascade,
  type text not null check (type in ('held', 'booked', 'released', 'cancelled', 'expired')),
  seat_ids bigint[] not null,
  legs int4range not null,
  at timestamptz not null default clock_timestamp()
);
comment on table app.seat_events is 'Every change of seats, appended in the transaction that made it. position orders them as they committed.';
create index seat_events_unsequenced_idx on app.seat_events (id) where position is null;
create index seat_events_show_position_idx on app.seat_events (show_id, position);

create function app.tg_bookings_seat_events()
returns trigger
language plpgsql
set search_path = pg_catalog
as $$
-- One event per change of a booking's hold on its seats:
--   held      a hold begins          booked     a booking is confirmed
--   released  a hold is cancelled    cancelled  a confirmed booking is cancelled
--   expired   a hold lapsed
declare
  v_type text := case
    when old.status = 'pending' and new.status = 'confirmed' then 'booked'
    when new.status = 'pending' and old.expires_at is null and new.expires_at is not null then 'held'
    when new.status = 'cancelled' and old.status = 'pending' then 'released'
    when new.status = 'cancelled' then 'cancelled'
    when new.status = 'expired' then 'expired'
  end;
begin
  if v_type is not null then
    insert into app.seat_events (show_id, booking_id, type, seat_ids, legs)
    select new.show_id, new.id, v_type, array_agg(bs.seat_id order by bs.seat_id), new.legs
    from app.booking_seats bs
    where bs.booking_id = new.id and not bs.unavailable;
  end if;
  return null;
end;
$$;
comment on function app.tg_bookings_seat_events() is 'Append a seat event for each change of a booking''s hold on its seats.';

create trigger bookings_seat_events
  after update of status, expires_at on app.bookings
  for each row
  execute function app.tg_bookings_seat_events();

create function app.sequence_events(batch int default 10000)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Give committed events their positions, in the order they became visible,
-- and notify channel seat_events once per show ('<show id> <last position>').
-- Runs are serialised by an advisory lock: a run that finds another under
-- way returns at once, and the next run picks up what this one would have.
-- Each statement below takes a new snapshot after the lock, so it sees
-- everything the previous run committed.
declare
  v_shows jsonb;
begin
  if not pg_try_advisory_xact_lock(hashtext('app.sequence_events')) then
    return '[]';
  end if;
  with pending as (
    select e.id from app.seat_events e where e.position is null order by e.id limit batch
  ), numbered as (
    select p.id, nextval('app.seat_event_position_seq') as position
    from (select id from pending order by id) p
  ), updated as (
    update app.seat_events e set position = n.position
    from numbered n where e.id = n.id
    returning e.show_id, e.position
  )
  select coalesce(jsonb_agg(jsonb_build_object('showId', u.show_id, 'position', u.last)), '[]') into v_shows
  from (select show_id, max(position) as last from updated group by show_id) u;
  perform pg_notify('seat_events', (s->>'showId') || ' ' || (s->>'position'))
  from jsonb_array_elements(v_shows) s;
  return v_shows;
end;
$$;
comment on function app.sequence_events(int) is
  'Assign positions to committed seat events in commit order and notify seat_events per show; returns the shows and their last positions.';

create function app.show_events(show_id uuid, after bigint default 0, page_size int default 100)
returns json
language sql stable
set search_path = pg_catalog
as $$
  -- Sequenced events of a show after a position, oldest first.
  select coalesce(json_agg(json_build_object(
      'id', e.position,
      'showId', e.show_id,
      'type', e.type,
      'bookingId', e.booking_id,
      'seats', (select json_agg(json_build_object('id', s.id, 'label', s.label) order by s.id)
                from app.seats s where s.id = any(e.seat_ids)),
      'fromStop', (select st.name from app.show_stops st where st.show_id = e.show_id and st.position = lower(e.legs)),
      'toStop', (select st.name from app.show_stops st where st.show_id = e.show_id and st.position = upper(e.legs)),
      'at', e.at) order by e.position), '[]')
  from (
    select * from app.seat_events e
    where e.show_id = show_events.show_id and e.position > after
    order by e.position
    limit page_size
  ) e;
$$;
comment on function app.show_events(uuid, bigint, int) is 'A page of a show''s sequenced seat events after a position, as JSON.';

create function app.seat_map_version(show_id uuid)
returns text
language sql stable
set search_path = pg_catalog
as $$
  -- Changes whenever the seat map may have: a new sequenced event, or a hold
  -- that has lapsed but is not yet recorded as expired.
  select coalesce((select max(e.position) from app.seat_events e where e.show_id = seat_map_version.show_id), 0)
         || '-' ||
         (select count(*) from app.bookings b
          where b.status = 'pending' and b.expires_at <= clock_timestamp() and b.show_id = seat_map_version.show_id);
$$;
comment on function app.seat_map_version(uuid) is 'A version of a show''s seat map, for its ETag.';

create function app.seat_map_json(show_id uuid, only_status text default null, from_stop text default null, to_stop text default null)
returns json
language sql stable
set search_path = pg_catalog
as $$
  -- The whole seat map as one JSON value in one query. json, not jsonb:
  -- built once and passed through as text, it needs no key sorting.
  -- A seat's status is over the requested legs: booked or held when any
  -- active booking overlaps them.
  with range as (
    select app.leg_range(seat_map_json.show_id, from_stop, to_stop) as legs
  ), taken as (
    -- booked beats held when a seat has both on different legs of a trip
    select bs.seat_id, bool_and(bs.held_until is not null) as held
    from app.booking_seats bs
    where bs.show_id = seat_map_json.show_id and bs.active and bs.legs && (select legs from range)
      and (bs.held_until is null or bs.held_until > clock_timestamp())
    group by bs.seat_id
  ), seat_status as (
    select s.id, s.label, s.section, s.row_label, s.number, s.category, c.price,
           s.section_index, s.row_index, s.seat_index,
           case when not s.for_sale then 'blocked'
                when t.seat_id is null then 'available'
                when t.held then 'held'
                else 'booked' end as status
    from app.seats s
    join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
    left join taken t on t.seat_id = s.id
    where s.show_id = seat_map_json.show_id
  )
  select json_build_object(
    'showId', seat_map_json.show_id,
    'fromStop', from_stop,
    'toStop', to_stop,
    'counts', json_build_object(
      'total', count(*),
      'available', count(*) filter (where status = 'available'),
      'held', count(*) filter (where status = 'held'),
      'booked', count(*) filter (where status = 'booked'),
      'blocked', count(*) filter (where status = 'blocked')),
    'seats', coalesce(json_agg(json_build_object(
        'id', id, 'label', label, 'section', section, 'row', row_label, 'number', number,
        'category', category, 'price', price, 'status', status)
        order by section_index, row_index, seat_index)
      filter (where only_status is null or status = only_status), '[]'))
  from seat_status
  having (select legs from range) is not null;
$$;
comment on function app.seat_map_json(uuid, text, text, text) is
  'The seat map of a show over a leg range (default: the whole trip), with counts per status; null when there is no such show. Raises STOPX.';

create function app.seat_map(show_id uuid, only_status text, from_stop text, to_stop text, if_none_match text)
returns table (etag text, body text)
language plpgsql stable
set search_path = pg_catalog
as $$
-- One round trip for a seat map request: its version, and the map only when
-- the client's copy is not current. No row: there is no such show.
declare
  v_version text;
begin
  if not exists (select 1 from app.shows s where s.id = seat_map.show_id) then
    return;
  end if;
  v_version := app.seat_map_version(seat_map.show_id);
  etag := v_version;
  if if_none_match is not null and v_version = any(string_to_array(if_none_match, ',')) then
    body := null;
  else
    body := app.seat_map_json(seat_map.show_id, only_status, from_stop, to_stop)::text;
  end if;
  return next;
end;
$$;
comment on function app.seat_map(uuid, text, text, text, text) is
  'The seat map''s version, and the map itself unless the version is among if_none_match (a comma-separated list of versions).';

--! Previous: sha1:237cd00785376c5c74ff6f55aba755f971892691
--! Hash: sha1:a88f3fa3726d0b81621a58583dbbb2955b273217
--! Message: Tickets and check-in at the door: admissions and scans per show, keyed by show_id

-- Tickets and check-in at the door. A ticket is a booked seat of a
-- confirmed booking (one booking_seats row): it is derived, never stored,
-- so booking costs nothing more. Its signed code is made and verified by
-- the service (Ed25519 needs no database). What is stored is the door's
-- state: each ticket's one admission, and each scan by its nonce, so an
-- offline upload sent twice counts once. Both tables are per show and keyed
-- by show_id first. Idempotent while it is current.sql.

-- The one admission of a ticket. The primary key is the backstop: a ticket
-- is admitted at most once, whatever a function does.
create table if not exists app.ticket_admissions (
  show_id uuid not null,
  booking_id uuid not null,
  seat_id bigint not null,
  gate text not null check (char_length(gate) between 1 and 64 and app.is_printable(gate)),
  -- When the scanner saw the ticket, by its clock (an offline scan is uploaded later).
  scanned_at timestamptz not null check (app.is_rfc3339_instant(scanned_at)),
  -- When the service recorded it.
  admitted_at timestamptz not null default clock_timestamp(),
  nonce text not null,
  primary key (show_id, booking_id, seat_id)
);
comment on table app.ticket_admissions is
  'The one admission of each admitted ticket (a booked seat of a booking); the primary key makes a second one impossible.';

-- Every scan that reached the service, by the nonce its scanner gave it:
-- a scan uploaded again is answered from here and counted once.
create table if not exists app.ticket_scans (
  show_id uuid not null,
  nonce text not null check (nonce ~ '^[A-Za-z0-9_-]{8,64}$'),
  -- The ticket the code named; null for a code that is not a valid ticket code.
  booking_id uuid,
  seat_id bigint,
  gate text not null check (char_length(gate) between 1 and 64 and app.is_printable(gate)),
  scanned_at timestamptz not null check (app.is_rfc3339_instant(scanned_at)),
  received_at timestamptz not null default clock_timestamp(),
  outcome text not null check (outcome in ('pending', 'admitted', 'already-admitted', 'void', 'unknown', 'other-show', 'invalid')),
  primary key (show_id, nonce)
);
comment on table app.ticket_scans is
  'Every scan that reached the service, with its outcome, by the scanner''s nonce per show.';

-- Admissions are in the admin's event history, never in the public feed.
alter table app.seat_events drop constraint if exists seat_events_type_check;
alter table app.seat_events add constraint seat_events_type_check
  check (type in ('held', 'booked', 'released', 'cancelled', 'expired', 'admitted'));

drop function if exists app.show_events(uuid, bigint, int, boolean);
create function app.show_events(show_id uuid, after bigint default 0, page_size int default 100, with_bookings boolean default false)
returns json
language sql stable
set search_path = pg_catalog
as $$
  -- Sequenced events of a show after a position, oldest first. Admissions
  -- (and their gate) only in the admin's history: when a seat's holder came
  -- in is nobody else's business, and changes no seat's availability.
  select coalesce(json_agg(
      json_build_object('id', e.position, 'showId', e.show_id, 'type', e.type)::jsonb
      || case when with_bookings then jsonb_build_object('bookingId', e.booking_id) else '{}' end
      || case when e.type = 'admitted' then jsonb_build_object('gate',
           (select a.gate from app.ticket_admissions a
            where a.show_id = e.show_id and a.booking_id = e.booking_id and a.seat_id = e.seat_ids[1])) else '{}' end
      || jsonb_build_object(
        'seats', (select jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id)
                  from app.seats s where s.id = any(e.seat_ids)),
        'fromStop', (select st.name from app.show_stops st where st.show_id = e.show_id and st.position = lower(e.legs)),
        'toStop', (select st.name from app.show_stops st where st.show_id = e.show_id and st.position = upper(e.legs)),
        'at', e.at)
      order by e.position), '[]')
  from (
    select * from app.seat_events e
    where e.show_id = show_events.show_id and e.position > after
      and (with_bookings or e.type <> 'admitted')
    order by e.position
    limit page_size
  ) e;
$$;
comment on function app.show_events(uuid, bigint, int, boolean) is
  'A page of a show''s sequenced seat events after a position, as JSON; booking ids and admissions only with with_bookings (the admin history).';

drop function if exists app.booking_tickets(uuid, text);
create function app.booking_tickets(booking_id uuid, secret text default null) returns jsonb
language plpgsql stable
set search_path = pg_catalog
as $$
-- A booking's tickets: one per booked seat once it has been confirmed.
-- Valid while the booking is confirmed, void once it is cancelled; a hold
-- that never was confirmed has none. The service signs each valid code.
declare
  v_result jsonb;
begin
  perform app.authorize_booking(booking_id, secret);
  select jsonb_build_object(
    'bookingId', b.id,
    'showId', b.show_id,
    'bookingStatus', b.status,
    'tickets', case when b.confirmed_at is null then '[]'::jsonb else coalesce((
      select jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
        'seat', jsonb_build_object('id', s.id, 'label', s.label, 'section', s.section, 'row', s.row_label,
                                   'number', s.number, 'category', s.category),
        'status', case when b.status <> 'confirmed' then 'void' when a.seat_id is not null then 'admitted' else 'valid' end,
        'admission', case when a.seat_id is not null then jsonb_build_object(
          'gate', a.gate, 'scannedAt', a.scanned_at, 'admittedAt', a.admitted_at) end)) order by s.id)
      from app.booking_seats bs
      join app.seats s on s.id = bs.seat_id
      left join app.ticket_admissions a on a.show_id = b.show_id and a.booking_id = b.id and a.seat_id = bs.seat_id
      where bs.booking_id = b.id and not bs.unavailable), '[]') end
  ) into v_result
  from app.bookings b
  where b.id = booking_tickets.booking_id;
  if v_result is null then
    perform app.raise_problem('BKGNF', format('There is no booking %s', booking_id));
  end if;
  return v_result;
end;
$$;
comment on function app.booking_tickets(uuid, text) is
  'A booking''s tickets with their check-in state, with the booking''s secret (null: a trusted caller). Raises BKGNF.';

drop function if exists app.scan_result(app.ticket_scans, boolean);
create function app.scan_result(scan app.ticket_scans, replayed boolean) returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  -- A scan's answer: its outcome, the ticket's seat, and for an admitted
  -- ticket its one admission (this scan's, or the first one's).
  select jsonb_strip_nulls(jsonb_build_object(
    'nonce', scan.nonce,
    'outcome', scan.outcome,
    'replayed', replayed,
    'bookingId', scan.booking_id,
    'seat', (select jsonb_build_object('id', s.id, 'label', s.label) from app.seats s
             where s.id = scan.seat_id and scan.outcome <> 'invalid'),
    'admission', (select jsonb_build_object('gate', a.gate, 'scannedAt', a.scanned_at, 'admittedAt', a.admitted_at)
                  from app.ticket_admissions a
                  where scan.outcome in ('admitted', 'already-admitted')
                    and a.show_id = scan.show_id and a.booking_id = scan.booking_id and a.seat_id = scan.seat_id)));
$$;
comment on function app.scan_result(app.ticket_scans, boolean) is 'The JSON answer to one scan.';

drop function if exists app.check_in(uuid, jsonb);
create function app.check_in(show_id uuid, scans jsonb) returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Scans at the doors of a show, each {nonce, gate, scannedAt, ticket}: ticket
-- is {showId, bookingId, seatId} from a code whose signature the service
-- verified, or null for a code that is not a valid one. Answers one result
-- per scan, in the order given; null for no such show.
--
-- Locks, per scan: the scan's nonce row (an upload of the same scan waits
-- here, then replays), then the booking FOR SHARE (a cancellation, which
-- locks it FOR UPDATE, cannot commit between the status read and the
-- admission), then the admission row (the second of two gates waits on the
-- first's insert and then finds it). Scans are taken in ticket order, then
-- nonce order, so two uploads that share tickets lock them in the same
-- order and cannot deadlock; results go back in the order given.
declare
  v_scan record;
  v_row app.ticket_scans;
  v_status app.booking_status;
  v_booking_show uuid;
  v_legs int4range;
  v_results jsonb[] := array_fill(null::jsonb, array[jsonb_array_length(scans)]);
begin
  if not exists (select 1 from app.shows s where s.id = check_in.show_id) then
    return null;
  end if;
  for v_scan in
    select x.ordinality::int as n, x.value->>'nonce' as nonce, x.value->>'gate' as gate,
           (x.value->>'scannedAt')::timestamptz as scanned_at,
           (x.value->'ticket'->>'showId')::uuid as ticket_show,
           (x.value->'ticket'->>'bookingId')::uuid as booking_id,
           (x.value->'ticket'->>'seatId')::bigint as seat_id
    from jsonb_array_elements(scans) with ordinality x
    order by booking_id nulls last, seat_id, nonce
  loop
    insert into app.ticket_scans as t (show_id, nonce, booking_id, seat_id, gate, scanned_at, outcome)
    values (check_in.show_id, v_scan.nonce, v_scan.booking_id, v_scan.seat_id, v_scan.gate, v_scan.scanned_at, 'pending')
    on conflict do nothing
    returning * into v_row;
    if not found then
      -- Seen before: the stored answer, unless the nonce came with another ticket.
      select * into v_row from app.ticket_scans t where t.show_id = check_in.show_id and t.nonce = v_scan.nonce;
      if v_row.booking_id is distinct from v_scan.booking_id or v_row.seat_id is distinct from v_scan.seat_id then
        v_results[v_scan.n] := jsonb_build_object('nonce', v_scan.nonce, 'outcome', 'nonce-reused', 'replayed', false);
      else
        v_results[v_scan.n] := app.scan_result(v_row, true);
      end if;
      continue;
    end if;

    if v_scan.booking_id is null then
      v_row.outcome := 'invalid';
    elsif v_scan.ticket_show <> check_in.show_id then
      v_row.outcome := 'other-show';
    else
      select b.status, b.show_id, b.legs into v_status, v_booking_show, v_legs
      from app.bookings b
      where b.id = v_scan.booking_id
        and exists (select 1 from app.booking_seats bs
                    where bs.booking_id = v_scan.booking_id and bs.seat_id = v_scan.seat_id and not bs.unavailable)
      for share of b;
      if not found or v_booking_show <> check_in.show_id then
        v_row.outcome := 'unknown';
      elsif v_status <> 'confirmed' then
        v_row.outcome := 'void';
      else
        insert into app.ticket_admissions (show_id, booking_id, seat_id, gate, scanned_at, nonce)
        values (check_in.show_id, v_scan.booking_id, v_scan.seat_id, v_scan.gate, v_scan.scanned_at, v_scan.nonce)
        on conflict do nothing;
        if found then
          v_row.outcome := 'admitted';
          -- In the admin's history; the sequencer gives it its position.
          insert into app.seat_events (show_id, booking_id, type, seat_ids, legs)
          values (check_in.show_id, v_scan.booking_id, 'admitted', array[v_scan.seat_id], v_legs);
        else
          v_row.outcome := 'already-admitted';
        end if;
      end if;
    end if;
    update app.ticket_scans t set outcome = v_row.outcome
    where t.show_id = check_in.show_id and t.nonce = v_scan.nonce;
    v_results[v_scan.n] := app.scan_result(v_row, false);
  end loop;
  return to_jsonb(v_results);
end;
$$;
comment on function app.check_in(uuid, jsonb) is
  'Record scans at a show''s doors: each ticket admitted at most once, each nonce counted once. Returns one result per scan, in order.';

drop function if exists app.check_in_counts(uuid);
create function app.check_in_counts(show_id uuid) returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  -- Tickets are the seats of confirmed bookings; admitted counts those of
  -- them admitted (a ticket voided after it was admitted is in neither).
  select jsonb_build_object(
    'showId', s.id,
    'tickets', (select count(*) from app.booking_seats bs join app.bookings b on b.id = bs.booking_id
                where bs.show_id = s.id and bs.active and b.status = 'confirmed'),
    'admitted', (select count(*) from app.ticket_admissions a join app.bookings b on b.id = a.booking_id
                 where a.show_id = s.id and b.status = 'confirmed'),
    'gates', coalesce((
      select jsonb_agg(jsonb_build_object('gate', g.gate, 'admitted', g.n) order by g.gate)
      from (select a.gate, count(*) as n from app.ticket_admissions a join app.bookings b on b.id = a.booking_id
            where a.show_id = s.id and b.status = 'confirmed' group by a.gate) g), '[]'),
    'refused', (select count(*) from app.ticket_scans t
                where t.show_id = s.id and t.outcome not in ('admitted', 'pending')))
  from app.shows s where s.id = check_in_counts.show_id;
$$;
comment on function app.check_in_counts(uuid) is 'A show''s tickets, admissions (in all and per gate) and refused scans; null for no such show.';

--! Previous: sha1:1f933732c8ccfdf3ad36b55e23a101b8cf8aafeb
--! Hash: sha1:66062c2d15d0b1bd2878a3de43eb2d2222be6d2b
--! Message: Booking lifecycle: holds, confirm and cancel, idempotency keys, best-available seats

-- Booking lifecycle: holds that expire, confirm and cancel, idempotent
-- retries, best-available seats, and seats that are not for sale.
--
-- Lock order, for every path that changes a seat's bookings: first the seat
-- rows (FOR NO KEY UPDATE, ascending id), then booking rows (FOR UPDATE,
-- ascending id). Nothing takes a seat lock while holding a booking lock, so
-- no two paths can wait on each other in a cycle.

drop function if exists app.book_seats(uuid, bigint[], text[], text, text);
drop function if exists app.create_booking(jsonb, text, int, int, int);
drop function if exists app.confirm_booking(uuid, jsonb, text);
drop function if exists app.cancel_booking(uuid, jsonb, text);
drop function if exists app.lock_booking(uuid);
drop function if exists app.pick_best_seats(uuid, int, text, text, bigint, boolean, int4range);
drop function if exists app.seat_blocks(uuid, int, text, text, bigint, int4range, timestamptz);
drop function if exists app.claim_seats(uuid, uuid, bigint[], int4range, timestamptz, timestamptz);
drop function if exists app.taken_seats(bigint[], int4range, timestamptz);
drop function if exists app.idempotency_begin(text, text, jsonb);
drop function if exists app.idempotency_end(text, jsonb);
drop function if exists app.sweep(int, interval);
drop trigger if exists bookings_check_transition on app.bookings;
drop trigger if exists bookings_release_seats on app.bookings;
drop function if exists app.tg_bookings_check_transition();
drop function if exists app.tg_bookings_release_seats();
drop table if exists app.idempotency_keys;

alter table app.bookings drop column if exists payment_reference;
alter table app.bookings add column payment_reference text
  check (char_length(payment_reference) between 1 and 200);

--------------------------------------------------------------------------------
-- Status transitions, enforced on the table whoever writes it.
--
--   pending ──► confirmed ──► cancelled
--      ├──────► failed
--      ├──────► cancelled
--      └──────► expired

create function app.tg_bookings_check_transition()
returns trigger
language plpgsql
set search_path = pg_catalog
as $$
begin
  if not ((old.status = 'pending' and new.status in ('confirmed', 'failed', 'cancelled', 'expired'))
          or (old.status = 'confirmed' and new.status = 'cancelled')) then
    perform app.raise_problem('BKSTA',
      format('A %s booking cannot become %s', old.status, new.status),
      jsonb_build_object('bookingStatus', old.status));
  end if;
  return new;
end;
$$;
comment on function app.tg_bookings_check_transition() is 'Refuses any status change outside the booking lifecycle (BKSTA).';

create trigger bookings_check_transition
  before update of status on app.bookings
  for each row when (old.status is distinct from new.status)
  execute function app.tg_bookings_check_transition();

create function app.tg_bookings_release_seats()
returns trigger
language plpgsql
set search_path = pg_catalog
as $$
begin
  -- Freeing needs no seat lock: a booker that still sees the old row
  -- active either treats it as taken (it was, a moment ago) or as a lapsed hold.
  if new.status in ('cancelled', 'expired') then
    update app.booking_seats bs set active = false, held_until = null
    where bs.booking_id = new.id and bs.active;
  elsif new.status = 'confirmed' then
    update app.booking_seats bs set held_until = null
    where bs.booking_id = new.id and bs.held_until is not null;
  end if;
  return null;
end;
$$;
comment on function app.tg_bookings_release_seats() is
  'A cancelled or expired booking frees its seats at once; a confirmed one stops being a hold.';

create trigger bookings_release_seats
  after update of status on app.bookings
  for each row when (old.status is distinct from new.status)
  execute function app.tg_bookings_release_seats();

--------------------------------------------------------------------------------
-- Idempotency keys: stored in the transaction that acts, so a retry sees
-- either nothing (the first attempt rolled back; act again) or the committed
-- response (replay it). A retry racing its original waits on the key's
-- unique index until the original commits.

create table app.idempotency_keys (
  key text primary key check (char_length(key) between 1 and 255),
  fingerprint text not null,
  response jsonb,
  created_at timestamptz not null default now()
);
comment on table app.idempotency_keys is 'Idempotency-Key of each acting request, with the request fingerprint and the response to replay. Kept at least 24 hours.';
create index idempotency_keys_created_idx on app.idempotency_keys (created_at);

create function app.idempotency_begin(key text, operation text, request jsonb)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Returns the stored response of an earlier request with this key, or null
-- when this request is the first (and now owns the key).
declare
  v_fingerprint text := md5(operation || ' ' || coalesce(request, '{}'::jsonb)::text);
  v_stored app.idempotency_keys;
begin
  if key is null then
    return null;
  end if;
  insert into app.idempotency_keys (key, fingerprint) values (key, v_fingerprint)
  on conflict on constraint idempotency_keys_pkey do nothing;
  if found then
    return null;
  end if;
  select * into v_stored from app.idempotency_keys k where k.key = idempotency_begin.key;
  if v_stored.fingerprint <> v_fingerprint then
    perform app.raise_problem('IDKEY', 'This Idempotency-Key was used for a different request');
  end if;
  return v_stored.response;
end;
$$;
comment on function app.idempotency_begin(text, text, jsonb) is
  'Claim an Idempotency-Key for a request, or return the response stored under it. Raises IDKEY when the key came with another request.';

create function app.idempotency_end(key text, response jsonb)
returns void
language sql volatile
set search_path = pg_catalog
as $$
  update app.idempotency_keys k set response = idempotency_end.response where k.key = idempotency_end.key;
$$;
comment on function app.idempotency_end(text, jsonb) is 'Store the response to replay for an Idempotency-Key.';

--------------------------------------------------------------------------------
-- Seats

-- Rows may name seats that are not for sale; the rest of create_show is unchanged.
create or replace function app.create_show(spec jsonb)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Why one function: a show and all its seats appear together or not at all,
-- and the layout rules live in one place whoever calls it.
declare
  v_show app.shows;
  v_seat_count bigint;
  v_dup text;
begin
  select c->>'code' into v_dup
  from jsonb_array_elements(spec->'categories') c
  group by c->>'code' having count(*) > 1 limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('Category %s is defined twice', v_dup),
      jsonb_build_object('field', 'categories'));
  end if;

  select sec->>'name' into v_dup
  from jsonb_array_elements(spec->'sections') sec
  group by sec->>'name' having count(*) > 1 limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('Section %s is defined twice', v_dup),
      jsonb_build_object('field', 'sections'));
  end if;

  select format('%s row %s', sec->>'name', r->>'label') into v_dup
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r
  group by sec->>'name', r->>'label' having count(*) > 1 limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('Row %s is defined twice', v_dup),
      jsonb_build_object('field', 'sections'));
  end if;

  select format('%s row %s uses category %s', sec->>'name', r->>'label', r->>'category') into v_dup
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r
  where not exists (
    select 1 from jsonb_array_elements(spec->'categories') c where c->>'code' = r->>'category')
  limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('%s, which is not defined', v_dup),
      jsonb_build_object('field', 'sections'));
  end if;

  select format('%s row %s has no seat %s', sec->>'name', r->>'label', b) into v_dup
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r,
       jsonb_array_elements_text(coalesce(r->'blocked', '[]')) b
  where b::int > (r->>'seats')::int
  limit 1;
  if found then
    perform app.raise_problem('LAYOT', format('%s to block', v_dup), jsonb_build_object('field', 'sections'));
  end if;

  select sum((r->>'seats')::int) into v_seat_count
  from jsonb_array_elements(spec->'sections') sec, jsonb_array_elements(sec->'rows') r;
  if coalesce(v_seat_count, 0) not between 1 and 100000 then
    perform app.raise_problem('LAYOT',
      format('A show has between 1 and 100000 seats; this layout has %s', coalesce(v_seat_count, 0)),
      jsonb_build_object('field', 'sections'));
  end if;

  insert into app.shows (kind, name, venue, starts_at, currency, seat_count)
  values ((spec->>'kind')::app.show_kind, spec->>'name', spec->>'venue',
          (spec->>'startsAt')::timestamptz, spec->>'currency', v_seat_count)
  returning * into v_show;

  insert into app.seat_categories (show_id, code, price)
  select v_show.id, c->>'code', (c->>'price')::int
  from jsonb_array_elements(spec->'categories') c;

  insert into app.seats (show_id, section, row_label, number, label, category,
                         section_index, row_index, seat_index, for_sale)
  select v_show.id, sec->>'name', r->>'label', n,
         format('%s-%s-%s', sec->>'name', r->>'label', n),
         r->>'category', si - 1, ri - 1, n - 1,
         not coalesce(r->'blocked', '[]') @> to_jsonb(n)
  from jsonb_array_elements(spec->'sections') with ordinality as s1(sec, si),
       jsonb_array_elements(sec->'rows') with ordinality as r1(r, ri),
       generate_series(1, (r->>'seats')::int) as n
  order by si, ri, n;

  return app.show_detail_json(v_show.id);
end;
$$;

create function app.taken_seats(seat_ids bigint[], legs int4range, at timestamptz)
returns bigint[]
language sql stable
set search_path = pg_catalog
as $$
  -- Not for sale, or in a confirmed booking or a live hold over any of these
  -- legs. A hold past its expiry does not count: it is free from that instant.
  select array_agg(t.id order by t.id)
  from (
    select s.id from app.seats s where s.id = any(taken_seats.seat_ids) and not s.for_sale
    union
    select bs.seat_id from app.booking_seats bs
    where bs.seat_id = any(taken_seats.seat_ids) and bs.active and bs.legs && taken_seats.legs
      and (bs.held_until is null or bs.held_until > taken_seats.at)
  ) t;
$$;
comment on function app.taken_seats(bigint[], int4range, timestamptz) is
  'Which of these seats are unavailable over these legs at this instant; null when all are free. Call it with the seats locked.';

create function app.claim_seats(
  booking_id uuid, show_id uuid, seat_ids bigint[], legs int4range, held_until timestamptz, at timestamptz)
returns bigint[]
language plpgsql volatile
set search_path = pg_catalog
as $$
-- With the seat rows locked by the caller: give them all to the booking,
-- or none. Returns the unavailable seats (and records them on the booking),
-- or null when the booking now holds every seat.
declare
  v_taken bigint[] := app.taken_seats(seat_ids, legs, at);
begin
  if v_taken is null then
    -- Lapsed holds on these seats end now, under the seat locks, so no
    -- sweeper has to run first. Their booking rows are locked in id order.
    perform 1 from app.bookings b
    where b.id in (select bs.booking_id from app.booking_seats bs
                   where bs.seat_id = any(claim_seats.seat_ids) and bs.active and bs.legs && claim_seats.legs)
      and b.status = 'pending' and b.expires_at <= at
    order by b.id
    for update;
    update app.bookings b set status = 'expired', updated_at = at
    where b.id in (select bs.booking_id from app.booking_seats bs
                   where bs.seat_id = any(claim_seats.seat_ids) and bs.active and bs.legs && claim_seats.legs)
      and b.status = 'pending' and b.expires_at <= at;
  end if;

  insert into app.booking_seats (booking_id, seat_id, show_id, legs, price, active, held_until, unavailable)
  select claim_seats.booking_id, s.id, s.show_id, claim_seats.legs, c.price * (upper(claim_seats.legs) - lower(claim_seats.legs)),
         v_taken is null, case when v_taken is null then claim_seats.held_until end,
         s.id = any(coalesce(v_taken, '{}'))
  from app.seats s
  join app.seat_categories c on c.show_id = s.show_id and c.code = s.category
  where s.id = any(claim_seats.seat_ids) and s.show_id = claim_seats.show_id;
  return v_taken;
end;
$$;
comment on function app.claim_seats(uuid, uuid, bigint[], int4range, timestamptz, timestamptz) is
  'Give locked seats to a booking, all or none; expires lapsed holds on them. Returns the unavailable seats, or null.';

create function app.seat_blocks(
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
        where bs.seat_id = r.id and bs.active and bs.legs && seat_blocks.legs
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
comment on function app.seat_blocks(uuid, int, text, text, bigint, int4range, timestamptz) is
  'Candidate blocks of adjacent free seats for best-available selection, best first.';

create function app.pick_best_seats(
  show_id uuid, quantity int, section text, category text, max_price bigint, allow_separate boolean, legs int4range)
returns bigint[]
language plpgsql volatile
set search_path = pg_catalog
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
      select b.seat_ids from app.seat_blocks(pick_best_seats.show_id, quantity, section, category, max_price, legs, clock_timestamp()) b
      union all
      -- Seats one by one, nearest first (an orphan no longer matters), when
      -- the client accepts separate seats and no block of them is left.
      (select b.seat_ids from app.seat_blocks(pick_best_seats.show_id, 1, section, category, max_price, legs, clock_timestamp()) b
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
comment on function app.pick_best_seats(uuid, int, text, text, bigint, boolean, int4range) is
  'Lock and return the best `quantity` free seats (adjacent in one row unless allow_separate); null when there are not enough.';

--------------------------------------------------------------------------------
-- Bookings

create or replace function app.booking_json(booking_id uuid)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select jsonb_strip_nulls(jsonb_build_object(
    'id', b.id,
    'showId', b.show_id,
    -- A hold past its expiry reads as expired before the sweep records it.
    'status', case when b.status = 'pending' and b.expires_at <= clock_timestamp() then 'expired'
                   else b.status::text end,
    'customer', jsonb_build_object('name', b.customer_name, 'email', b.customer_email),
    'seats', coalesce((
      select jsonb_agg(jsonb_build_object(
        'id', s.id, 'label', s.label, 'section', s.section, 'row', s.row_label,
        'number', s.number, 'category', s.category, 'price', bs.price) order by s.id)
      from app.booking_seats bs join app.seats s on s.id = bs.seat_id
      where bs.booking_id = b.id), '[]'),
    'unavailableSeats', case when b.status = 'failed' then coalesce((
      select jsonb_agg(jsonb_build_object('id', s.id, 'label', s.label) order by s.id)
      from app.booking_seats bs join app.seats s on s.id = bs.seat_id
      where bs.booking_id = b.id and bs.unavailable), '[]') end,
    'totalPrice', b.total_price,
    'currency', sh.currency,
    'failureReason', b.failure_reason,
    'expiresAt', b.expires_at,
    'paymentReference', b.payment_reference,
    'createdAt', b.created_at,
    'updatedAt', b.updated_at,
    'confirmedAt', b.confirmed_at,
    'cancelledAt', b.cancelled_at,
    'cancelReason', b.cancel_reason
  ))
  from app.bookings b join app.shows sh on sh.id = b.show_id
  where b.id = booking_json.booking_id;
$$;

create function app.create_booking(
  request jsonb,
  idempotency_key text default null,
  max_seats int default 10,
  hold_default_seconds int default 600,
  hold_max_seconds int default 1800
)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Why one function: the whole booking, from the Pending record to its
-- outcome, is one call and one transaction, so a client makes one round
-- trip, no interleaving of two bookers can see a half-done booking, and a
-- retry with the same Idempotency-Key finds the committed outcome.
--
-- Returns {"booking": <booking>, "replayed": <bool>}. A booking whose seats
-- were not available is recorded as failed and returned, not raised.
declare
  v_replay jsonb;
  v_show_id uuid := (request->>'showId')::uuid;
  v_seat_ids bigint[] := array(select jsonb_array_elements_text(request->'seatIds')::bigint);
  v_seat_labels text[] := array(select jsonb_array_elements_text(request->'seatLabels'));
  v_quantity int := (request->>'quantity')::int;
  v_hold boolean := coalesce((request->>'hold')::boolean, false);
  v_hold_seconds int := coalesce((request->>'holdSeconds')::int, hold_default_seconds);
  v_legs int4range := int4range(0, 1);
  v_requested int;
  v_booking_id uuid;
  v_seats bigint[];
  v_taken bigint[];
  v_now timestamptz;
  v_held_until timestamptz;
  v_reason text;
  v_result jsonb;
begin
  if (request ? 'seatIds')::int + (request ? 'seatLabels')::int + (request ? 'quantity')::int <> 1 then
    perform app.raise_problem('BKREQ', 'Name the seats by seatIds or by seatLabels, or ask for a quantity: exactly one of them');
  end if;
  if v_quantity is null and (request ?| array['section', 'category', 'maxPrice', 'allowSeparate']) then
    perform app.raise_problem('BKREQ', 'section, category, maxPrice and allowSeparate go with quantity');
  end if;
  v_requested := coalesce(v_quantity, nullif(cardinality(v_seat_ids), 0), cardinality(v_seat_labels));
  if v_requested < 1 then
    perform app.raise_problem('BKREQ', 'A booking needs at least one seat');
  end if;
  if v_requested > max_seats then
    perform app.raise_problem('SEATN', format('A booking may have at most %s seats', max_seats),
      jsonb_build_object('maxSeats', max_seats));
  end if;
  if v_quantity is null and v_requested <> (select count(distinct x) from unnest(v_seat_ids) x)
                                           + (select count(distinct x) from unnest(v_seat_labels) x) then
    perform app.raise_problem('SEATD', 'The same seat is named more than once');
  end if;
  if request ? 'holdSeconds' and not v_hold then
    perform app.raise_problem('BKREQ', 'holdSeconds goes with "hold": true');
  end if;
  if v_hold and v_hold_seconds not between 1 and hold_max_seconds then
    perform app.raise_problem('BKREQ', format('A hold lasts between 1 and %s seconds', hold_max_seconds),
      jsonb_build_object('errors', jsonb_build_array(jsonb_build_object(
        'name', 'body.holdSeconds', 'reason', format('must be at most %s', hold_max_seconds)))));
  end if;

  v_replay := app.idempotency_begin(idempotency_key, 'create-booking', request);
  if v_replay is not null then
    return jsonb_build_object('booking', v_replay, 'replayed', true);
  end if;

  if not exists (select 1 from app.shows s where s.id = v_show_id) then
    perform app.raise_problem('SHWNF', format('There is no show %s', v_show_id),
      jsonb_build_object('showId', v_show_id));
  end if;

  insert into app.bookings (show_id, status, legs, customer_name, customer_email)
  values (v_show_id, 'pending', v_legs, request->'customer'->>'name', request->'customer'->>'email')
  returning id into v_booking_id;

  if v_quantity is null then
    -- Lock the named seat rows in ascending id order: bookings of
    -- overlapping seats queue on the first seat they share and can never
    -- deadlock. FOR NO KEY UPDATE conflicts with itself but not with the
    -- KEY SHARE locks that booking_seats' foreign key takes.
    select array_agg(l.id order by l.id) into v_seats
    from (
      select s.id from app.seats s
      where s.show_id = v_show_id and (s.id = any(v_seat_ids) or s.label = any(v_seat_labels))
      order by s.id
      for no key update of s
    ) l;
    if coalesce(cardinality(v_seats), 0) <> v_requested then
      perform app.raise_problem('SEATX', 'Some seats do not exist in this show',
        jsonb_build_object('unknownSeats', coalesce(
          (select jsonb_agg(x order by x) from unnest(v_seat_ids) x
            where not exists (select 1 from app.seats s where s.id = x and s.show_id = v_show_id)),
          (select jsonb_agg(x order by x) from unnest(v_seat_labels) x
            where not exists (select 1 from app.seats s where s.label = x and s.show_id = v_show_id)))));
    end if;
  else
    v_seats := app.pick_best_seats(v_show_id, v_quantity, request->>'section', request->>'category',
      (request->>'maxPrice')::bigint, coalesce((request->>'allowSeparate')::boolean, false), v_legs);
    if v_seats is null then
      v_reason := 'not-enough-seats';
    end if;
  end if;

  -- After the locks, so a hold's clock starts when its seats are held.
  v_now := clock_timestamp();
  v_held_until := case when v_hold then v_now + make_interval(secs => v_hold_seconds) end;
  if v_seats is not null then
    v_taken := app.claim_seats(v_booking_id, v_show_id, v_seats, v_legs, v_held_until, v_now);
    if v_taken is not null then
      v_reason := 'seats-unavailable';
    end if;
  end if;

  if v_reason is not null then
    update app.bookings b set status = 'failed', failure_reason = v_reason, updated_at = v_now
    where b.id = v_booking_id;
  else
    update app.bookings b
    set status = case when v_hold then 'pending' else 'confirmed' end::app.booking_status,
        expires_at = v_held_until,
        confirmed_at = case when v_hold then null else v_now end,
        total_price = (select sum(bs.price) from app.booking_seats bs where bs.booking_id = v_booking_id),
        updated_at = v_now
    where b.id = v_booking_id;
  end if;

  v_result := app.booking_json(v_booking_id);
  perform app.idempotency_end(idempotency_key, v_result);
  return jsonb_build_object('booking', v_result, 'replayed', false);
end;
$$;
comment on function app.create_booking(jsonb, text, int, int, int) is
  'Book named seats or the best available ones, confirmed at once or held until expiresAt, in one transaction. Raises BKREQ, SEATN, SEATD, SHWNF, SEATX, IDKEY.';

create function app.lock_booking(booking_id uuid)
returns app.bookings
language plpgsql volatile
set search_path = pg_catalog
as $$
-- The lock order of every seat path: the booking's seats by id, then the
-- booking row. The row is read again under its lock, since it may have
-- changed while we waited.
declare
  v_booking app.bookings;
begin
  perform 1 from app.seats s
  where s.id in (select bs.seat_id from app.booking_seats bs where bs.booking_id = lock_booking.booking_id and bs.active)
  order by s.id
  for no key update;
  select * into v_booking from app.bookings b where b.id = lock_booking.booking_id for update;
  if not found then
    perform app.raise_problem('BKGNF', format('There is no booking %s', booking_id));
  end if;
  return v_booking;
end;
$$;
comment on function app.lock_booking(uuid) is 'Lock a booking''s seats and then the booking itself. Raises BKGNF.';

create function app.confirm_booking(booking_id uuid, request jsonb default '{}', idempotency_key text default null)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
declare
  v_replay jsonb := app.idempotency_begin(idempotency_key, 'confirm ' || booking_id, request);
  v_booking app.bookings;
  v_now timestamptz;
  v_result jsonb;
begin
  if v_replay is not null then
    return jsonb_build_object('booking', v_replay, 'replayed', true);
  end if;
  v_booking := app.lock_booking(booking_id);
  v_now := clock_timestamp();
  -- Under the seat locks: a hold past its expiry can never be confirmed,
  -- and a booker may already have taken its seats.
  if v_booking.status = 'pending' and v_booking.expires_at <= v_now then
    perform app.raise_problem('BKSTA', format('The hold expired at %s', v_booking.expires_at),
      jsonb_build_object('bookingStatus', 'expired'));
  end if;
  if v_booking.status <> 'pending' then
    perform app.raise_problem('BKSTA', format('The booking is %s; only a pending booking can be confirmed', v_booking.status),
      jsonb_build_object('bookingStatus', v_booking.status));
  end if;
  update app.bookings b
  set status = 'confirmed', confirmed_at = v_now, updated_at = v_now,
      payment_reference = request->>'paymentReference'
  where b.id = confirm_booking.booking_id;
  v_result := app.booking_json(booking_id);
  perform app.idempotency_end(idempotency_key, v_result);
  return jsonb_build_object('booking', v_result, 'replayed', false);
end;
$$;
comment on function app.confirm_booking(uuid, jsonb, text) is
  'Confirm a pending hold that has not expired. Raises BKGNF, BKSTA, IDKEY.';

create function app.cancel_booking(booking_id uuid, request jsonb default '{}', idempotency_key text default null)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
declare
  v_replay jsonb := app.idempotency_begin(idempotency_key, 'cancel ' || booking_id, request);
  v_booking app.bookings;
  v_now timestamptz;
  v_result jsonb;
begin
  if v_replay is not null then
    return jsonb_build_object('booking', v_replay, 'replayed', true);
  end if;
  v_booking := app.lock_booking(booking_id);
  v_now := clock_timestamp();
  if v_booking.status = 'pending' and v_booking.expires_at <= v_now then
    perform app.raise_problem('BKSTA', format('The hold expired at %s', v_booking.expires_at),
      jsonb_build_object('bookingStatus', 'expired'));
  end if;
  if v_booking.status not in ('pending', 'confirmed') then
    perform app.raise_problem('BKSTA', format('The booking is %s; only a pending or confirmed booking can be cancelled', v_booking.status),
      jsonb_build_object('bookingStatus', v_booking.status));
  end if;
  -- The release trigger frees the seats in this same transaction.
  update app.bookings b
  set status = 'cancelled', cancelled_at = v_now, updated_at = v_now,
      cancel_reason = coalesce(request->>'reason', 'cancelled by the customer')
  where b.id = cancel_booking.booking_id;
  v_result := app.booking_json(booking_id);
  perform app.idempotency_end(idempotency_key, v_result);
  return jsonb_build_object('booking', v_result, 'replayed', false);
end;
$$;
comment on function app.cancel_booking(uuid, jsonb, text) is
  'Cancel a pending or confirmed booking and free its seats at once. Raises BKGNF, BKSTA, IDKEY.';

create function app.sweep(batch int default 1000, keep_keys interval default '24 hours')
returns jsonb
language plpgsql volatile
set search_path = pg_catalog
as $$
-- Records lapsed holds as expired (their seats are already free to bookers)
-- and forgets idempotency keys older than keep_keys. Never waits for a
-- booker: a hold whose seats are locked is left for the next sweep, or for
-- the booker, which expires it itself.
declare
  v_id uuid;
  v_expired int := 0;
  v_purged int;
begin
  for v_id in
    select b.id from app.bookings b
    where b.status = 'pending' and b.expires_at <= clock_timestamp()
    order by b.expires_at
    limit batch
  loop
    begin
      perform 1 from app.seats s
      where s.id in (select bs.seat_id from app.booking_seats bs where bs.booking_id = v_id and bs.active)
      order by s.id
      for no key update nowait;
      update app.bookings b set status = 'expired', updated_at = clock_timestamp()
      where b.id = v_id and b.status = 'pending' and b.expires_at <= clock_timestamp();
      if found then
        v_expired := v_expired + 1;
      end if;
    exception when lock_not_available then
      null;
    end;
  end loop;
  delete from app.idempotency_keys k where k.created_at < clock_timestamp() - keep_keys;
  get diagnostics v_purged = row_count;
  return jsonb_build_object('expired', v_expired, 'keysPurged', v_purged);
end;
$$;
comment on function app.sweep(int, interval) is
  'Record lapsed holds as expired and purge old idempotency keys; returns the counts.';

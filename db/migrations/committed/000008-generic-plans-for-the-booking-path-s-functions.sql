--! Previous: sha1:a611e963b9bfbee3484e34468ea9374bd2b143b9
--! Hash: sha1:81b9a037fc145c929ad1e6fe4624313b7413963a
--! Message: Generic plans for the booking path's functions

-- Generic plans for the booking path's PL/pgSQL functions.
--
-- Profiling 2,000 bookings found most of the time in planning, not running:
-- with array parameters (seat_id = any($1)) the cached generic plan looks
-- costlier than a custom one, so PostgreSQL planned every statement again on
-- every call (0.3 to 0.8 ms each, against 0.06 ms to execute). The generic
-- plans are the same index probes, so these functions always use them.
-- 2,000 bookings in one session: 2.2 s before, 1.05 s after.

alter function app.create_booking(jsonb, text, int, int, int) set plan_cache_mode = force_generic_plan;
alter function app.claim_seats(uuid, uuid, bigint[], int4range, timestamptz, timestamptz) set plan_cache_mode = force_generic_plan;
alter function app.pick_best_seats(uuid, int, text, text, bigint, boolean, int4range) set plan_cache_mode = force_generic_plan;
alter function app.lock_booking(uuid) set plan_cache_mode = force_generic_plan;
alter function app.confirm_booking(uuid, jsonb, text) set plan_cache_mode = force_generic_plan;
alter function app.cancel_booking(uuid, jsonb, text) set plan_cache_mode = force_generic_plan;
alter function app.leg_range(uuid, text, text) set plan_cache_mode = force_generic_plan;
alter function app.idempotency_begin(text, text, jsonb) set plan_cache_mode = force_generic_plan;

-- Without a key there is nothing to store: return before any statement.
create or replace function app.idempotency_end(key text, response jsonb)
returns void
language plpgsql volatile
set search_path = pg_catalog
as $$
begin
  if key is not null then
    update app.idempotency_keys k set response = idempotency_end.response where k.key = idempotency_end.key;
  end if;
end;
$$;

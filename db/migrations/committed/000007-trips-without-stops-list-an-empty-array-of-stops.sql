--! Previous: sha1:0430b3dd5ccaeb2e0e2c7d0519fb8c6eaa5c13e2
--! Hash: sha1:a611e963b9bfbee3484e34468ea9374bd2b143b9
--! Message: Trips without stops list an empty array of stops

-- A trip created before trips had stops lists them as an empty array, not
-- null, as the contract says. Found by the Postman contract run against a
-- database that had such a trip.

create or replace function app.show_json(s app.shows)
returns jsonb
language sql stable
set search_path = pg_catalog
as $$
  select jsonb_build_object(
    'id', s.id,
    'kind', s.kind,
    'name', s.name,
    'venue', s.venue,
    'startsAt', s.starts_at,
    'currency', s.currency,
    'seatCount', s.seat_count,
    'createdAt', s.created_at
  ) || case when s.kind = 'trip' then jsonb_build_object('stops', coalesce(app.stops_json(s.id), '[]')) else '{}' end;
$$;

// A typed client of the API, over the types generated from openapi.yaml:
//   import { createBookingClient } from 'ticket-booking/client';
//   const api = createBookingClient('http://localhost:3000', { adminToken });
//   const { data, error } = await api.POST('/api/bookings', { body: { … } });
import createClient, { type Client } from 'openapi-fetch';
import type { paths } from './generated/api.js';

export type { components, operations, paths } from './generated/api.js';
// Offline verification of ticket codes is 'ticket-booking/tickets' (it needs
// node:crypto; this client also runs in browsers).

export interface BookingClientOptions {
  /** Sent as a bearer token, for admin operations. */
  adminToken?: string;
  fetch?: typeof globalThis.fetch;
}

/**
 * The headers of a booking's own operations (read, confirm, cancel): its
 * secret, from the answer that created it.
 *   api.GET('/api/bookings/{bookingId}', { params: { path: { bookingId } }, headers: bookingSecret(secret) })
 */
export function bookingSecret(secret: string): { Authorization: string } {
  return { Authorization: `Bearer ${secret}` };
}

/**
 * The headers of check-in at the door (scans, uploads, counts): the door staff's token.
 *   api.POST('/api/shows/{showId}/check-ins', { params: { path: { showId } }, headers: doorToken(token), body: { … } })
 */
export function doorToken(token: string): { Authorization: string } {
  return { Authorization: `Bearer ${token}` };
}

export function createBookingClient(baseUrl: string, options: BookingClientOptions = {}): Client<paths> {
  return createClient<paths>({
    baseUrl,
    headers: options.adminToken ? { Authorization: `Bearer ${options.adminToken}` } : {},
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}

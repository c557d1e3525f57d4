// Which client a request comes from, for every per-client limit. Behind
// proxies the socket's address is the last proxy's, so the address comes
// from a source the deployment names: X-Forwarded-For, trusted for as many
// hops as there are proxies (Express' `trust proxy`), or a header that a
// trusted edge sets and overwrites (such as Cloudflare's CF-Connecting-IP).
import { isIP } from 'node:net';
import { ipKeyGenerator } from 'express-rate-limit';

export interface ClientAddressSource {
  /** Proxy hops in front of the service whose X-Forwarded-For entries to trust. */
  trustProxy: number;
  /**
   * A header holding the client's address, set by a trusted edge; used only
   * when configured, and only when it holds one valid address.
   */
  header?: string;
}

/** What the address is read from: any Express request. */
interface RequestLike {
  get(name: string): string | undefined;
  ip?: string | undefined;
  socket: { remoteAddress?: string | undefined };
}

/** The client's address; Express must have been given `trust proxy` = source.trustProxy. */
export function clientAddress(req: RequestLike, source: Pick<ClientAddressSource, 'header'>): string {
  if (source.header) {
    const value = req.get(source.header)?.trim();
    if (value && isIP(value)) return value;
  }
  return req.ip ?? req.socket.remoteAddress ?? 'unknown';
}

/**
 * The key of a client's rate limit bucket: its address, or for IPv6 its /56
 * network, since one client holds a whole prefix and could rotate through it.
 */
export function clientKey(req: RequestLike, source: Pick<ClientAddressSource, 'header'>): string {
  return ipKeyGenerator(clientAddress(req, source));
}

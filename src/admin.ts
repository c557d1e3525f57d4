// Admin operations need the admin bearer token, and /metrics its own scrape
// token; each is compared in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { ProblemError } from './problem.js';

const digest = (value: string) => createHash('sha256').update(value).digest();

export function requireAdmin(token: string, realm = 'admin'): RequestHandler {
  // Hashing both sides gives equal lengths, so the comparison leaks nothing.
  const expected = digest(token);
  return (req, _res, next) => {
    const match = /^Bearer +(\S+)$/i.exec(req.get('Authorization') ?? '');
    if (!match?.[1]) {
      throw new ProblemError('unauthorized', `Send the ${realm} token as "Authorization: Bearer <token>"`, {}, {
        'WWW-Authenticate': `Bearer realm="${realm}"`,
      });
    }
    if (!timingSafeEqual(digest(match[1]), expected)) {
      throw new ProblemError('forbidden', `The ${realm} token is not valid`);
    }
    next();
  };
}

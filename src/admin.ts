// Admin operations need the admin bearer token, compared in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { ProblemError } from './problem.js';

const digest = (value: string) => createHash('sha256').update(value).digest();

export function requireAdmin(token: string): RequestHandler {
  // Hashing both sides gives equal lengths, so the comparison leaks nothing.
  const expected = digest(token);
  return (req, _res, next) => {
    const match = /^Bearer +(\S+)$/i.exec(req.get('Authorization') ?? '');
    if (!match?.[1]) {
      throw new ProblemError('unauthorized', 'Send the admin token as "Authorization: Bearer <token>"', {}, {
        'WWW-Authenticate': 'Bearer realm="admin"',
      });
    }
    if (!timingSafeEqual(digest(match[1]), expected)) {
      throw new ProblemError('forbidden', 'The admin token is not valid');
    }
    next();
  };
}

// Credentials, each a bearer token compared in constant time: the admin
// token, /metrics' own scrape token, the door staff's token, and a
// booking's secret (or the admin token) on that booking's routes.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler, Router } from 'express';
import { ProblemError } from './problem.js';

const digest = (value: string) => createHash('sha256').update(value).digest();

/** What a credential check reads of a request: its headers. */
interface WithHeaders {
  get(name: string): string | undefined;
}

/** The bearer credential of a request, if it sent one. */
export function bearer(req: WithHeaders): string | undefined {
  return /^Bearer +(\S+)$/i.exec(req.get('Authorization') ?? '')?.[1];
}

function missing(realm: string, what: string, placeholder: string): ProblemError {
  return new ProblemError('unauthorized', `Send ${what} as "Authorization: Bearer <${placeholder}>"`, {}, {
    'WWW-Authenticate': `Bearer realm="${realm}"`,
  });
}

/** Whether a credential is the given token; hashing both sides gives equal lengths, so the comparison leaks nothing. */
export function tokenMatcher(token: string): (credential: string) => boolean {
  const expected = digest(token);
  return (credential) => timingSafeEqual(digest(credential), expected);
}

/** Refuses a request without the token (401) or with another one (403); `realm` names the token. */
export function requireAdmin(token: string, realm = 'admin'): RequestHandler {
  const isAdmin = tokenMatcher(token);
  return (req, _res, next) => {
    const credential = bearer(req);
    if (!credential) throw missing(realm, `the ${realm} token`, 'token');
    if (!isAdmin(credential)) throw new ProblemError('forbidden', `The ${realm} token is not valid`);
    next();
  };
}

/** Refuses a request without a credential (401) or with none of the tokens (403); for routes two roles may use. */
export function requireAnyOf(tokens: readonly string[], realm: string): RequestHandler {
  const matchers = tokens.map(tokenMatcher);
  return (req, _res, next) => {
    const credential = bearer(req);
    if (!credential) throw missing(realm, `the ${realm} token`, 'token');
    // Every matcher runs, so the time taken does not tell which token matched.
    if (!matchers.map((matches) => matches(credential)).includes(true)) throw new ProblemError('forbidden', `The ${realm} token is not valid`);
    next();
  };
}

/**
 * A booking route's credential: the booking's secret, or null for the admin
 * (a trusted caller to the database). A wrong secret is not refused here:
 * the database answers it exactly as it answers a booking that does not exist.
 */
export function bookingCredential(adminToken: string): (req: WithHeaders) => string | null {
  const isAdmin = tokenMatcher(adminToken);
  return (req) => {
    const credential = bearer(req);
    if (!credential) throw missing('booking', "the booking's secret", 'secret');
    return isAdmin(credential) ? null : credential;
  };
}

/** Whether the request carries the admin token (for views the admin sees in full). */
export function adminViewer(adminToken: string): (req: WithHeaders) => boolean {
  const isAdmin = tokenMatcher(adminToken);
  return (req) => {
    const credential = bearer(req);
    return credential !== undefined && isAdmin(credential);
  };
}

/** A route the contract's `security` guards, in Express's path syntax. */
export interface GuardedRoute {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  path: string;
  /** The contract's alternatives, such as "adminToken" or "adminToken or bookingSecret". */
  schemes: string;
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The operations of an OpenAPI document that need a credential, read from
 * their `security` (or the document's): an operation that also allows `{}`,
 * or has no requirement, is open and not listed.
 */
export function guardedRoutes(contract: unknown): GuardedRoute[] {
  if (!isObject(contract) || !isObject(contract.paths)) throw new Error('the contract has no paths');
  const routes: GuardedRoute[] = [];
  for (const [path, item] of Object.entries(contract.paths)) {
    if (!isObject(item)) continue;
    for (const method of METHODS) {
      const operation = item[method];
      if (!isObject(operation)) continue;
      const security = operation.security ?? contract.security ?? [];
      if (!Array.isArray(security) || security.length === 0) continue;
      const alternatives = security.map((requirement) => (isObject(requirement) ? Object.keys(requirement).sort().join(' and ') : ''));
      if (alternatives.includes('')) continue;
      routes.push({ method, path: path.replaceAll(/\{([^}]+)\}/g, ':$1'), schemes: [...new Set(alternatives)].sort().join(' or ') });
    }
  }
  return routes;
}

/**
 * Installs a guard on every route the contract guards, before anything
 * reads the body. A combination of schemes without a guard stops the app
 * from being built, so a contract change cannot leave a route open.
 */
export function guardRoutes(router: Router, contract: unknown, guards: Record<string, RequestHandler>): void {
  for (const { method, path, schemes } of guardedRoutes(contract)) {
    const guard = guards[schemes];
    if (!guard) throw new Error(`no credential check for ${method.toUpperCase()} ${path}, which the contract guards with ${schemes}`);
    router[method](path, guard);
  }
}

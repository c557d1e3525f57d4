// The HTTP server an Express app is served by.
import { createServer, IncomingMessage, ServerResponse, type Server } from 'node:http';
import type { Express } from 'express';

type Constructor = new (...args: never[]) => object;

/** Node's request and response types are plain constructor functions, not classes (Node 20 to 24). */
function isPlainConstructor(type: Constructor): boolean {
  return !Function.prototype.toString.call(type).startsWith('class');
}

/**
 * A constructor that runs `base` on an object made with `prototype`, as if
 * it were `base`'s own. (Only `new` is kept, not `base`'s statics.)
 * Reflect.construct with another new.target would also give the object
 * `prototype`, but V8 then makes a hidden class for each object.
 */
function bornWith<C extends Constructor>(base: C, prototype: object): C {
  function Born(this: object, ...args: never[]): void {
    (base as unknown as (...args: never[]) => void).apply(this, args);
  }
  Born.prototype = prototype;
  return Born as unknown as C;
}

/**
 * An HTTP server for `app` whose requests and responses are created with
 * the app's own prototypes.
 *
 * Express gives every request and response its app's prototypes with
 * Object.setPrototypeOf. V8 gives each object so changed a hidden class of
 * its own, so every property read in every middleware sees a new shape on
 * each request and falls back to its slowest path, and each request leaves
 * new hidden classes behind for the collector. Created with the app's
 * prototypes, the objects already have them: Express changes nothing, and
 * all requests share one shape. Should Node's types become classes, the
 * server is a plain one.
 */
export function createAppServer(app: Express): Server {
  if (!isPlainConstructor(IncomingMessage) || !isPlainConstructor(ServerResponse)) return createServer(app);
  return createServer(
    {
      IncomingMessage: bornWith<typeof IncomingMessage>(IncomingMessage, app.request),
      ServerResponse: bornWith<typeof ServerResponse>(ServerResponse, app.response),
    },
    app,
  );
}

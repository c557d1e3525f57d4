// The HTTP server an Express app is served by.
import { createServer, IncomingMessage, ServerResponse, type Server } from 'node:http';
import type { Express } from 'express';

/**
 * Makes `own`, a subclass's prototype, stand in for `prototype`: the same
 * own properties and the same prototype. Instances of a derived class
 * share one hidden class in V8. (A plain function with `prototype` that
 * calls Node's constructor leaves a response with slow, dictionary
 * properties, and Reflect.construct with a plain function as new.target
 * gives each object a hidden class of its own.)
 */
function standIn(own: object, prototype: object): void {
  delete (own as { constructor?: unknown }).constructor;
  Object.setPrototypeOf(own, Object.getPrototypeOf(prototype));
  Object.defineProperties(own, Object.getOwnPropertyDescriptors(prototype));
}

/**
 * An HTTP server for `app` whose requests and responses are created with
 * the app's own prototypes.
 *
 * Express gives every request and response its app's prototypes with
 * Object.setPrototypeOf. V8 gives each object so changed a hidden class of
 * its own, so every property read in every middleware sees a new shape on
 * each request and falls back to its slowest path, and each request leaves
 * new hidden classes behind for the collector. Here the app's prototypes
 * are replaced, once, by those of subclasses of Node's request and
 * response, with the same properties and the same prototypes; the server
 * creates its requests and responses from these subclasses. Express then
 * finds each object already has its app's prototype and changes nothing,
 * and all requests share one shape.
 */
export function createAppServer(app: Express): Server {
  class AppRequest extends IncomingMessage {}
  class AppResponse extends ServerResponse {}
  standIn(AppRequest.prototype, app.request);
  standIn(AppResponse.prototype, app.response);
  app.request = AppRequest.prototype as Express['request'];
  app.response = AppResponse.prototype as Express['response'];
  return createServer({ IncomingMessage: AppRequest, ServerResponse: AppResponse }, app);
}

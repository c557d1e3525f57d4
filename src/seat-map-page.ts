// The seat map page at /seat-map/: static files built into dist/web by
// `npm run build` (src/web/), under a policy that lets them load only
// themselves and talk only to this origin.
import { existsSync } from 'node:fs';
import express, { Router } from 'express';
import helmet from 'helmet';
import { projectRoot } from './paths.js';
import { ProblemError } from './problem.js';

export const pageDir = `${projectRoot}dist/web`;

export function seatMapPageRoutes(): Router {
  const router = Router();
  // Stricter than helmet's default: no inline styles, no styles from other
  // origins, nothing loaded or framed from anywhere else. The page's script
  // reaches only this origin's API (fetch and EventSource are connect-src).
  const pageHeaders = helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'none'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        connectSrc: ["'self'"],
        imgSrc: ["'self'"],
        formAction: ["'self'"],
        baseUri: ["'none'"],
        frameAncestors: ["'none'"],
      },
    },
  });
  router.use('/seat-map', pageHeaders, (req, _res, next) => {
    if (req.path === '/' && !existsSync(`${pageDir}/index.html`)) {
      throw new ProblemError('not-found', 'The seat map page is not built; run npm run build');
    }
    next();
  }, express.static(pageDir, { index: 'index.html', maxAge: 0 }));
  return router;
}

// The seat map page: its script bundled with the typed client for the
// browser, and its page and styles beside it, in dist/web, which the
// service serves at /seat-map/. `npm run build:page`, part of `npm run build`.
import { copyFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../..', import.meta.url));
export const pageOutDir = `${root}dist/web`;

export async function buildPage(): Promise<void> {
  mkdirSync(pageOutDir, { recursive: true });
  await build({
    entryPoints: [`${root}src/web/seat-map.ts`],
    outfile: `${pageOutDir}/seat-map.js`,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022'],
    minify: true,
    sourcemap: true,
    tsconfig: `${root}src/web/tsconfig.json`,
    logLevel: 'warning',
  });
  copyFileSync(`${root}src/web/index.html`, `${pageOutDir}/index.html`);
  copyFileSync(`${root}src/web/seat-map.css`, `${pageOutDir}/seat-map.css`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildPage();

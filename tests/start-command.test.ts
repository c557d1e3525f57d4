// The service runs with the Node flags of `npm start` wherever it runs: on
// Render (render.yaml), in the benchmark and the stream checks (the live
// service harness reads them from package.json).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { projectRoot } from '../src/paths.js';
import { productionNodeFlags } from './harness/live-service.js';

const start = (JSON.parse(readFileSync(`${projectRoot}package.json`, 'utf8')) as { scripts: { start: string } }).scripts.start;

describe('the start command', () => {
  it('is the same in render.yaml as in npm start', () => {
    const blueprint = parse(readFileSync(`${projectRoot}render.yaml`, 'utf8')) as { services: Array<{ name: string; startCommand: string }> };
    const api = blueprint.services.find((service) => service.name === 'ticket-booking-api');
    expect(api?.startCommand).toBe(start);
  });

  it('bounds how far the old generation grows past what is live', () => {
    expect(productionNodeFlags()).toContainEqual(expect.stringMatching(/^--heap-growing-percent=\d+$/));
  });

  it('gives flags this Node accepts', () => {
    const run = spawnSync(process.execPath, [...productionNodeFlags(), '-e', '0'], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});

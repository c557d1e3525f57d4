// Draws the benchmark's chart (SVG) and its table in bench/README.md, from
// the results JSON of one run.
import { readFile, writeFile } from 'node:fs/promises';
import { projectRoot } from '../src/migrate.js';
import type { PgbenchResult, ScenarioResult } from './run.js';

export interface Report {
  date: string;
  machine: { cores: number };
  results: ScenarioResult[];
  pgbench: PgbenchResult[];
}

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;');

function chart(report: Report): string {
  const bars: Array<{ label: string; value: number; kind: 'service' | 'pgbench' }> = [];
  for (const result of report.results) {
    bars.push({ label: `${result.name} (HTTP, ${result.connections} conn.)`, value: result.requestsPerSecond, kind: 'service' });
    const limit = report.pgbench.find((p) => p.name === result.name);
    if (limit) bars.push({ label: `${limit.name} (pgbench, ${limit.clients} clients)`, value: limit.transactionsPerSecond, kind: 'pgbench' });
  }
  const width = 760;
  const left = 260;
  const barHeight = 22;
  const gap = 8;
  const top = 40;
  const max = Math.max(...bars.map((bar) => bar.value), 1);
  const height = top + bars.length * (barHeight + gap) + 20;
  const rows = bars.map((bar, i) => {
    const y = top + i * (barHeight + gap);
    const w = Math.max(1, Math.round(((width - left - 90) * bar.value) / max));
    const colour = bar.kind === 'service' ? '#2563eb' : '#9ca3af';
    return [
      `<text x="${left - 8}" y="${y + 15}" text-anchor="end">${escape(bar.label)}</text>`,
      `<rect x="${left}" y="${y}" width="${w}" height="${barHeight}" fill="${colour}"/>`,
      `<text x="${left + w + 6}" y="${y + 15}">${bar.value.toLocaleString('en')}/s</text>`,
    ].join('');
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">Requests per second, one run on ${report.machine.cores} cores (${escape(report.date.slice(0, 10))})</text>`,
    ...rows,
    '</svg>',
    '',
  ].join('\n');
}

function table(report: Report): string {
  const lines = [
    '| scenario | connections | req/s | pgbench tps | ratio | p50 ms | p99 ms | statuses | errors | peak RSS MB | violations |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |',
  ];
  for (const r of report.results) {
    const limit = report.pgbench.find((p) => p.name === r.name);
    const statuses = Object.entries(r.statusCounts).map(([code, n]) => `${code}: ${n}`).join(', ');
    lines.push(
      `| ${r.name} | ${r.connections} | ${r.requestsPerSecond} | ${limit?.transactionsPerSecond ?? ''} | ${limit ? (r.requestsPerSecond / limit.transactionsPerSecond).toFixed(2) : ''} | ${r.latencyMs.p50} | ${r.latencyMs.p99} | ${statuses} | ${r.errors} | ${r.peakRssMb} | ${r.violations.length} |`,
    );
  }
  const details = report.results
    .filter((r) => r.details)
    .map((r) => `- \`${r.name}\`: ${Object.entries(r.details ?? {}).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const pgbench = report.pgbench.map(
    (p) => `- pgbench \`${p.name}\`: ${p.clients} clients, ${p.transactionsPerSecond} tps, average latency ${p.latencyAverageMs} ms, ${p.transactions} transactions`,
  );
  return [...lines, '', ...details, ...pgbench].join('\n');
}

export async function writeReport(report: Report): Promise<void> {
  await writeFile(`${projectRoot}bench/results/chart.svg`, chart(report));
  const readmePath = `${projectRoot}bench/README.md`;
  const readme = await readFile(readmePath, 'utf8');
  const section = [
    '<!-- results:start -->',
    `Latest run: ${report.date}, ${report.machine.cores} cores shared by the load generator, the service and the database.`,
    '',
    '![Requests per second](results/chart.svg)',
    '',
    table(report),
    '<!-- results:end -->',
  ].join('\n');
  const updated = readme.includes('<!-- results:start -->')
    ? readme.replace(/<!-- results:start -->[\s\S]*<!-- results:end -->/, section)
    : `${readme.trimEnd()}\n\n## Results\n\n${section}\n`;
  await writeFile(readmePath, updated);
}

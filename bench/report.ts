// Draws the benchmark's chart (SVG) and its tables in bench/README.md, from
// the results JSON of one run.
import { readFile, writeFile } from 'node:fs/promises';
import { projectRoot } from '../src/paths.js';
import type { DatabaseCost } from './database-cost.js';
import type { Comparison, PgbenchResult, ScenarioResult } from './run.js';

export interface Report {
  date: string;
  smoke: boolean;
  machine: { cores: number; postgres?: string };
  durationSeconds: number;
  /** What the run could not do (a baseline skipped), said once. */
  notes: string[];
  comparisons: Comparison[];
  results: ScenarioResult[];
  pgbench: PgbenchResult[];
}

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;');
const cell = (text: string) => text.replace(/\|/g, '\\|');
const figure = (n: number | undefined) => (n === undefined ? '–' : n.toLocaleString('en'));

const colours = { service: '#2563eb', bare_express: '#93c5fd', create_booking: '#f59e0b', minimal: '#9ca3af' } as const;

function chart(report: Report): string {
  const bars: Array<{ label: string; value: number; kind: keyof typeof colours }> = [];
  for (const c of report.comparisons) {
    bars.push({ label: `${c.workload}: service (HTTP, ${c.connections})`, value: c.serviceRps, kind: 'service' });
    if (c.bareExpress) bars.push({ label: `${c.workload}: bare Express, select 1`, value: c.bareExpress.requestsPerSecond, kind: 'bare_express' });
    if (c.functionTps !== undefined) bars.push({ label: `${c.workload}: pgbench → create_booking`, value: c.functionTps, kind: 'create_booking' });
    if (c.minimalTps !== undefined) bars.push({ label: `${c.workload}: pgbench → minimal`, value: c.minimalTps, kind: 'minimal' });
  }
  const width = 780;
  const left = 290;
  const barHeight = 18;
  const gap = 6;
  const top = 40;
  const max = Math.max(...bars.map((bar) => bar.value), 1);
  const height = top + bars.length * (barHeight + gap) + 20;
  const rows = bars.map((bar, i) => {
    const y = top + i * (barHeight + gap);
    const w = Math.max(1, Math.round(((width - left - 90) * bar.value) / max));
    return [
      `<text x="${left - 8}" y="${y + 13}" text-anchor="end">${escape(bar.label)}</text>`,
      `<rect x="${left}" y="${y}" width="${w}" height="${barHeight}" fill="${colours[bar.kind]}"/>`,
      `<text x="${left + w + 6}" y="${y + 13}">${bar.value.toLocaleString('en')}/s</text>`,
    ].join('');
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">Bookings per second, one run on ${report.machine.cores} cores, ${report.durationSeconds} s each (${escape(report.date.slice(0, 10))})</text>`,
    ...rows,
    '</svg>',
    '',
  ].join('\n');
}

function statuses(r: ScenarioResult): string {
  return Object.entries(r.statusCounts)
    .map(([code, n]) => `${code}: ${n}`)
    .join(', ');
}

function comparisonTable(report: Report): string[] {
  const lines = [
    '| workload | conn. | service req/s | p50 / p99 / max ms | statuses | pgbench → `create_booking` tps | pgbench → minimal tps | bare Express req/s (p99 ms) | service / minimal | function / minimal | service / function | service / bare Express | bare Express / minimal | service / compared | peak RSS MB |',
    '| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const c of report.comparisons) {
    const r = report.results.find((result) => result.name === c.workload);
    if (!r) continue;
    lines.push(
      `| ${c.workload}: ${c.description} | ${c.connections} | ${figure(c.serviceRps)} | ${r.latencyMs.p50} / ${r.latencyMs.p99} / ${r.latencyMs.max} | ${statuses(r)} | ${figure(c.functionTps)} | ${figure(c.minimalTps)} | ${c.bareExpress ? `${figure(c.bareExpress.requestsPerSecond)} (${c.bareExpress.p99})` : '–'} | ${c.serviceToMinimal ?? '–'} | ${c.functionToMinimal ?? '–'} | ${c.serviceToFunction ?? '–'} | ${c.serviceToBareExpress ?? '–'} | ${c.bareExpressToMinimal ?? '–'} | ${c.comparedTo ? `${c.serviceToCompared ?? '–'} (to ${c.comparedTo})` : '–'} | ${r.peakRssMb} |`,
    );
  }
  return lines;
}

function otherTable(report: Report): string[] {
  const compared = new Set(report.comparisons.map((c) => c.workload));
  const lines = [
    '| scenario | conn. | req/s | p50 / p99 / max ms | statuses | errors | peak RSS MB | violations |',
    '| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |',
  ];
  for (const r of report.results.filter((result) => !compared.has(result.name))) {
    lines.push(
      `| ${r.name} | ${r.connections} | ${figure(r.requestsPerSecond)} | ${r.latencyMs.p50} / ${r.latencyMs.p99} / ${r.latencyMs.max} | ${statuses(r)} | ${r.errors} | ${r.peakRssMb} | ${r.violations.length} |`,
    );
  }
  return lines;
}

function costTable(report: Report): string[] {
  const runs: Array<{ run: string; cost: DatabaseCost }> = [];
  for (const c of report.comparisons) {
    const served = report.results.find((r) => r.name === c.workload)?.database;
    if (served) runs.push({ run: `${c.workload}: service`, cost: served });
    for (const target of ['create_booking', 'minimal'] as const) {
      const cost = report.pgbench.find((p) => p.name === c.workload && p.target === target)?.database;
      if (cost) runs.push({ run: `${c.workload}: pgbench → ${target}`, cost });
    }
  }
  if (!runs.length) return [];
  const lines = [
    '| run | attempts (confirmed) | statements / attempt | WAL bytes / attempt | top statements by total time: calls / attempt × mean ms |',
    '| --- | ---: | ---: | ---: | --- |',
  ];
  for (const { run, cost } of runs) {
    const top = cost.top
      .slice(0, 3)
      .map((s) => `\`${cell(s.query.slice(0, 60))}\` ${s.callsPerBooking} × ${s.meanMs}`)
      .join('<br>');
    lines.push(`| ${run} | ${figure(cost.bookings)} (${figure(cost.confirmed)}) | ${cost.statementsPerBooking} | ${figure(cost.walBytesPerBooking)} | ${top} |`);
  }
  return lines;
}

function notes(report: Report): string[] {
  const lines = report.notes.map((note) => `- ${note}`);
  for (const r of report.results) {
    if (r.problems) lines.push(`- \`${r.name}\` answered ${Object.entries(r.problems).map(([what, n]) => `${n} × ${what}`).join('; ')}`);
  }
  for (const r of report.results) {
    if (r.details) lines.push(`- \`${r.name}\`: ${Object.entries(r.details).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    for (const v of r.violations) lines.push(`- \`${r.name}\` VIOLATION: ${v}`);
  }
  for (const b of report.pgbench) for (const v of b.violations ?? []) lines.push(`- pgbench \`${b.name}\` VIOLATION: ${v}`);
  return lines;
}

export async function writeReport(report: Report): Promise<void> {
  await writeFile(`${projectRoot}bench/results/chart.svg`, chart(report));
  const readmePath = `${projectRoot}bench/README.md`;
  const readme = await readFile(readmePath, 'utf8');
  const cost = costTable(report);
  const section = [
    '<!-- results:start -->',
    `Latest run: ${report.date}, ${report.machine.cores} cores shared by the load generator, the service and the database; ${report.durationSeconds} s a run; ${report.machine.postgres ?? 'PostgreSQL'}.`,
    '',
    '![Bookings per second](results/chart.svg)',
    '',
    ...comparisonTable(report),
    '',
    ...otherTable(report),
    ...(cost.length ? ['', 'What PostgreSQL did per booking attempt, per run:', '', ...cost] : []),
    '',
    ...notes(report),
    '<!-- results:end -->',
  ].join('\n');
  const updated = readme.includes('<!-- results:start -->')
    ? readme.replace(/<!-- results:start -->[\s\S]*<!-- results:end -->/, section)
    : `${readme.trimEnd()}\n\n## Results\n\n${section}\n`;
  await writeFile(readmePath, updated);
}

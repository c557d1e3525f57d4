// The error vocabulary is defined once (src/problem.ts): these check that
// what is written elsewhere agrees with it.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { apiSpecPath } from '../src/app.js';
import { projectRoot } from '../src/paths.js';
import { problemForFailure, problemForSqlstate, problemTypes, type ProblemType } from '../src/problem.js';

const readme = readFileSync(`${projectRoot}README.md`, 'utf8');
const conventions = readFileSync(`${projectRoot}db/CONVENTIONS.md`, 'utf8');
const contractText = readFileSync(apiSpecPath, 'utf8');
const vocabulary = Object.keys(problemTypes).sort();
const isProblemType = (name: string): name is ProblemType => name in problemTypes;

/** The rows of the markdown table that follows `heading`. */
function tableAfter(text: string, heading: string): string[][] {
  const start = text.indexOf(heading);
  expect(start, `no "${heading}" in the document`).toBeGreaterThanOrEqual(0);
  const lines = text.slice(start).split('\n').slice(1);
  const first = lines.findIndex((line) => line.startsWith('|'));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.split('|').slice(1, -1).map((cell) => cell.trim()));
  }
  return rows;
}

describe('the error vocabulary', () => {
  it("is what the README's problem table lists, type by type and with each type's status", () => {
    const rows = tableAfter(readme, 'Problems the API answers with:');
    const listed = rows.flatMap(([status, types]) =>
      [...(types ?? '').matchAll(/`\/problems\/([a-z-]+)`/g)].map((match) => ({ status: Number(status), type: match[1] ?? '' })),
    );
    expect(listed.map((row) => row.type).sort()).toEqual(vocabulary);
    for (const { status, type } of listed) {
      expect(isProblemType(type) && problemTypes[type].status, type).toBe(status);
    }
  });

  it('holds every problem type the contract names', () => {
    const named = [...new Set([...contractText.matchAll(/\/problems\/([a-z-]+)/g)].map((match) => match[1] ?? ''))];
    expect(named.length).toBeGreaterThan(0);
    expect(named.filter((type) => !isProblemType(type))).toEqual([]);
  });

  it("maps each custom SQLSTATE as db/CONVENTIONS.md's table says", () => {
    const rows = tableAfter(conventions, '## Errors: custom SQLSTATEs').filter(([, , , status]) => status !== '—');
    expect(rows.length).toBeGreaterThan(10);
    for (const [code, , , status, type] of rows) {
      const sqlstate = (code ?? '').replaceAll('`', '');
      const problem = problemForSqlstate(sqlstate, { message: 'from the database' });
      expect(problem && { status: problem.status, type: `\`/problems/${problem.problemType}\`` }, sqlstate).toEqual({
        status: Number(status),
        type,
      });
    }
  });

  it("answers a failed booking as the problem its failure reason names", () => {
    expect(problemForFailure('seats-unavailable')).toBe('seat-unavailable');
    expect(problemForFailure('not-enough-seats')).toBe('not-enough-seats');
  });
});

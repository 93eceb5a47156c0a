// Tests: golden tables. A few small schedules, printed as the CLI prints them plus the step x stage
// order, compared exactly with the text fixtures in golden/ (pytorch keeps its schedules the same way),
// so any drift in an order, a timing or the layout shows up as a diff. After an intended change,
// regenerate with UPDATE_GOLDEN=1 and read the diff before committing it.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { formatSchedule } from '../../src/scheduler/format.ts';
import { buildSchedule, formatOrderGrid, type ScheduleKind } from '../../src/scheduler/schedules.ts';

const GOLDEN: [ScheduleKind, number, number, number][] = [
  ['gpipe', 3, 4, 1],
  ['1f1b', 4, 8, 1],
  ['1f1b', 4, 2, 1],
  ['interleaved', 2, 4, 2],
  ['interleaved', 4, 8, 2],
  ['interleaved', 2, 2, 3],
  ['zb-h1', 2, 4, 1],
  ['zb-h1', 4, 8, 1],
  ['zbv', 2, 4, 2],
  ['zbv', 4, 8, 2],
];

function goldenText(kind: ScheduleKind, stages: number, microBatches: number, chunks: number): string {
  const schedule = buildSchedule(kind, stages, microBatches, chunks);
  return `${formatSchedule(schedule)}\n\nop order (step x stage):\n${formatOrderGrid(schedule.ops)}\n`;
}

for (const [kind, stages, microBatches, chunks] of GOLDEN) {
  const name = `${kind}-p${stages}-m${microBatches}${chunks > 1 ? `-v${chunks}` : ''}.txt`;
  test(`golden - ${name} matches exactly`, () => {
    const file = new URL(`./golden/${name}`, import.meta.url);
    const actual = goldenText(kind, stages, microBatches, chunks);
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(file, actual);
    assert.equal(actual, readFileSync(file, 'utf8'), `${name} changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff`);
  });
}

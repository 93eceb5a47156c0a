/** Test helpers: a run folder's trace.json, read and checked the way Perfetto would need it. */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TraceEvent } from '../../src/trace/trace.ts';

/** trace.json's events; fails if the file does not parse as one JSON document. */
export function readTrace(runFolder: string): TraceEvent[] {
  const trace = JSON.parse(readFileSync(join(runFolder, 'trace.json'), 'utf8')) as { traceEvents: TraceEvent[] };
  assert.ok(Array.isArray(trace.traceEvents), 'trace.json has no traceEvents');
  return trace.traceEvents;
}

/**
 * Every rank has compute slices on the timeline (pipeline actions named like `F3` or `B3.1`), the ranks'
 * parts were merged away, and every flow arrow that starts at a send ends at a receive on another rank.
 */
export function assertTraceOfEveryRank(runFolder: string, world: number, options: { pipeline?: boolean } = {}): TraceEvent[] {
  const events = readTrace(runFolder);
  for (let rank = 0; rank < world; rank++) {
    const compute = events.filter((e) => e.pid === rank && e.ph === 'X' && e.cat === 'compute');
    assert.ok(compute.length > 0, `no compute slice of rank ${rank} in trace.json`);
    if (options.pipeline) assert.ok(compute.some((e) => /^[FBIW]\d+(\.\d+)?$/.test(e.name)), `rank ${rank}'s slices are not named by action: ${[...new Set(compute.map((e) => e.name))]}`);
  }
  assert.deepEqual(readdirSync(runFolder).filter((name) => name.startsWith('trace.rank')), [], 'rank parts left in the run folder');
  if (options.pipeline) {
    const starts = events.filter((e) => e.ph === 's');
    const finishes = new Map(events.filter((e) => e.ph === 'f').map((e) => [e.id, e]));
    assert.ok(starts.length > 0, 'no flow arrow from a send');
    for (const start of starts) {
      const finish = finishes.get(start.id);
      assert.ok(finish !== undefined, `the send flow ${start.id} of rank ${start.pid} has no receive`);
      assert.notEqual(finish.pid, start.pid);
    }
  }
  return events;
}

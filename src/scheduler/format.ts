/**
 * Implements: the readable form of a schedule: a time x stage chart (stages as rows, one column per
 * time slot of a unit-time simulation, `.` where the stage idles), and a summary of each stage's bubble
 * and held activations next to the theoretical bubble. This is what `gpt-hybrid schedule` prints and
 * what the golden fixtures store.
 */
import { inFlightByOrder, interleavedBubble, measureBubbles, theoreticalBubble, theoreticalBubbleFormula, theoreticalBubbleOf } from './measure.ts';
import { formatOp, splitsBackward, type Schedule } from './ops.ts';
import { simulateTimeline, type TimedOp } from './timeline.ts';

const UNIT_TIMES = { forward: 1, backward: 1, backwardInput: 1, backwardWeight: 1 };

/** The chart alone: a header of time slots, then one row per stage. Throws if the schedule stalls. */
export function formatTimeChart(schedule: Schedule): string {
  const timeline = simulateTimeline(schedule, UNIT_TIMES);
  if (!timeline.ok) throw new Error(`the ${schedule.kind} schedule stalls; run validateSchedule for the details`);
  const { makespan, events } = timeline;
  const cells: string[][] = Array.from({ length: schedule.stages }, () => new Array<string>(makespan).fill('.'));
  for (const event of events) cells[event.stage]![event.start] = labelOf(event);
  const width = Math.max(String(Math.max(0, makespan - 1)).length, ...events.map((event) => labelOf(event).length));
  const rowLabel = (text: string) => text.padEnd(`stage ${schedule.stages - 1}`.length);
  const lines = [`${rowLabel('time')}  ${Array.from({ length: makespan }, (_, t) => String(t).padEnd(width)).join(' ')}`.trimEnd()];
  cells.forEach((row, stage) => lines.push(`${rowLabel(`stage ${stage}`)}  ${row.map((cell) => cell.padEnd(width)).join(' ')}`.trimEnd()));
  return lines.join('\n');
}

/** Title, chart, and per-stage bubble and peak held (micro-batch, chunk) pairs. */
export function formatSchedule(schedule: Schedule): string {
  const { kind, stages, microBatches, chunks } = schedule;
  const timeline = simulateTimeline(schedule, UNIT_TIMES);
  if (!timeline.ok) throw new Error(`the ${kind} schedule stalls; run validateSchedule for the details`);
  const bubbles = measureBubbles(timeline.events, stages);
  const count = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;
  const split = schedule.ops.some((ops) => splitsBackward(ops));
  const looped = kind === 'gpipe' || kind === '1f1b' || kind === 'interleaved';
  const lines = [
    `${kind} schedule: ${count(stages, 'stage', 'stages')}, ${count(microBatches, 'micro-batch', 'micro-batches')}, ${count(chunks, 'chunk', 'chunks')} per stage`,
    `ops: F<micro-batch>[.<chunk>] forward, ${split ? 'B... input gradient, W... weight gradient' : 'B... backward'}; one column per time slot with every op taking one slot; . = idle`,
    '',
    formatTimeChart(schedule),
    '',
    `bubble (idle / total time): ${bubbles.map((b) => `stage ${b.stage} ${b.fraction.toFixed(3)}`).join(', ')}`,
    looped
      ? `theoretical bubble: ${theoreticalBubble(stages, microBatches, chunks).toFixed(3)} = (p - 1) / (m + p - 1)${chunks > 1 ? ` / v` : ''}` +
        (chunks > 1 ? `; ideal interleaving with equal op times: ${interleavedBubble(stages, microBatches, chunks).toFixed(3)} = (p - 1) / (v m + p - 1)` : '')
      : `theoretical bubble: ${theoreticalBubbleOf(kind, stages, microBatches, chunks).toFixed(3)} = ${theoreticalBubbleFormula(kind, chunks)}`,
    `activations held at most (micro-batch${chunks > 1 ? ' x chunk pairs' : 'es'} forwarded, not yet ${split ? 'through W' : 'backwarded'}): ${schedule.ops.map((ops, stage) => `stage ${stage} ${inFlightByOrder(ops)}`).join(', ')}`,
  ];
  return lines.join('\n');
}

export function labelOf(event: Pick<TimedOp, 'kind' | 'microBatch' | 'chunk'>): string {
  return formatOp(event);
}

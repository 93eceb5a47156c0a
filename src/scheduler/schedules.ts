/**
 * Implements: the public surface of the pipeline schedules: `buildSchedule(kind, P, M, V)` picks the
 * builder, and the values, builders, validator and measurements are re-exported from here.
 */
import { buildGPipe } from './gpipe.ts';
import { buildInterleaved } from './interleaved.ts';
import { build1F1B } from './one-f-one-b.ts';
import { ScheduleError, SCHEDULE_KINDS, type Schedule, type ScheduleKind } from './ops.ts';

export { buildGPipe } from './gpipe.ts';
export { buildInterleaved } from './interleaved.ts';
export { build1F1B } from './one-f-one-b.ts';
export * from './ops.ts';
export { validateSchedule, formatOrderGrid, ScheduleValidationError } from './validate.ts';
export { simulateTimeline, DEFAULT_DURATIONS, type OpDurations, type TimedOp, type TimelineResult } from './timeline.ts';
export {
  measureBubbles,
  measureInFlight,
  inFlightByOrder,
  meanBubble,
  theoreticalBubble,
  interleavedBubble,
  type BusyInterval,
  type ComputeEvent,
  type StageBubble,
} from './measure.ts';

/** Builds the schedule of `kind`; `chunks` must be 1 unless kind is 'interleaved'. Throws ScheduleError. */
export function buildSchedule(kind: ScheduleKind, stages: number, microBatches: number, chunks = 1): Schedule {
  switch (kind) {
    case 'gpipe':
    case '1f1b':
      if (chunks !== 1) {
        throw new ScheduleError(`the ${kind} schedule runs one model chunk per stage, got chunks = ${chunks}: use chunks = 1, or the interleaved schedule`);
      }
      return kind === 'gpipe' ? buildGPipe(stages, microBatches) : build1F1B(stages, microBatches);
    case 'interleaved':
      return buildInterleaved(stages, microBatches, chunks);
    default:
      throw new ScheduleError(`unknown schedule kind ${JSON.stringify(kind)}: use one of ${SCHEDULE_KINDS.join(', ')}`);
  }
}

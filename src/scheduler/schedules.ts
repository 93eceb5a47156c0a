/**
 * Implements: the public surface of the pipeline schedules: `buildSchedule(kind, P, M, V)` picks the
 * builder, and the values, builders, validator and measurements are re-exported from here.
 */
import { buildAutoZeroBubble } from './auto-zero-bubble.ts';
import { buildGPipe } from './gpipe.ts';
import { buildInterleaved } from './interleaved.ts';
import { build1F1B } from './one-f-one-b.ts';
import { ScheduleError, SCHEDULE_KINDS, type Schedule, type ScheduleKind } from './ops.ts';
import { buildZeroBubbleH1 } from './zero-bubble-h1.ts';
import { buildZeroBubbleV } from './zero-bubble-v.ts';

export { buildAutoZeroBubble, planAutoZeroBubble, EQUAL_COSTS, type AutoZeroBubblePlan, type StageCosts } from './auto-zero-bubble.ts';
export { buildGPipe } from './gpipe.ts';
export { buildInterleaved } from './interleaved.ts';
export { build1F1B } from './one-f-one-b.ts';
export { buildZeroBubbleH1 } from './zero-bubble-h1.ts';
export { buildZeroBubbleV } from './zero-bubble-v.ts';
export { placementOf, placeLayerRanges, lossStageOf, type ChunkPlacement } from './placement.ts';
export * from './ops.ts';
export { validateSchedule, formatOrderGrid, ScheduleValidationError } from './validate.ts';
export { activationLimit } from './memory-bound.ts';
export { simulateTimeline, DEFAULT_DURATIONS, type OpDurations, type TimedOp, type TimelineResult } from './timeline.ts';
export {
  measureBubbles,
  measureInFlight,
  inFlightByOrder,
  meanBubble,
  theoreticalBubble,
  theoreticalBubbleOf,
  theoreticalBubbleFormula,
  interleavedBubble,
  type BusyInterval,
  type ComputeEvent,
  type StageBubble,
} from './measure.ts';

/**
 * Builds the schedule of `kind`; `chunks` must be 1 unless kind is 'interleaved' (any) or 'zbv' (2).
 * auto-zb is placed for F, B and W of equal length here (auto-zero-bubble.ts builds it for measured
 * times). Throws ScheduleError.
 */
export function buildSchedule(kind: ScheduleKind, stages: number, microBatches: number, chunks = 1): Schedule {
  switch (kind) {
    case 'gpipe':
    case '1f1b':
    case 'zb-h1':
    case 'auto-zb':
      if (chunks !== 1) {
        throw new ScheduleError(`the ${kind} schedule runs one model chunk per stage, got chunks = ${chunks}: use chunks = 1, or the interleaved or zbv schedule`);
      }
      switch (kind) {
        case 'gpipe':
          return buildGPipe(stages, microBatches);
        case '1f1b':
          return build1F1B(stages, microBatches);
        case 'zb-h1':
          return buildZeroBubbleH1(stages, microBatches);
        case 'auto-zb':
          return buildAutoZeroBubble(stages, microBatches);
      }
    case 'interleaved':
      return buildInterleaved(stages, microBatches, chunks);
    case 'zbv':
      return buildZeroBubbleV(stages, microBatches, chunks);
    default:
      throw new ScheduleError(`unknown schedule kind ${JSON.stringify(kind)}: use one of ${SCHEDULE_KINDS.join(', ')}`);
  }
}

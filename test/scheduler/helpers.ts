// Test helpers for the scheduler tests: the range of schedules.
import { build1F1B, buildGPipe, buildInterleaved, buildZeroBubbleH1, buildZeroBubbleV, type Schedule } from '../../src/scheduler/schedules.ts';

/** Every (kind, P, M, V) the builders accept in the range: P <= 8, M <= 16, V <= 4 (424 schedules). */
export function* allSchedules(): Generator<Schedule> {
  for (let stages = 1; stages <= 8; stages++) {
    for (let microBatches = 1; microBatches <= 16; microBatches++) {
      yield buildGPipe(stages, microBatches);
      yield build1F1B(stages, microBatches);
      if (microBatches % stages !== 0) continue;
      for (let chunks = 1; chunks <= 4; chunks++) yield buildInterleaved(stages, microBatches, chunks);
    }
  }
}

/** zb-h1 and zbv for every P <= 8, M <= 16 (256 schedules). */
export function* zeroBubbleSchedules(): Generator<Schedule> {
  for (let stages = 1; stages <= 8; stages++) {
    for (let microBatches = 1; microBatches <= 16; microBatches++) {
      yield buildZeroBubbleH1(stages, microBatches);
      yield buildZeroBubbleV(stages, microBatches);
    }
  }
}

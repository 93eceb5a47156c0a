/**
 * Implements: the GPipe schedule (Huang et al. 2019): every stage runs all forwards, then all backwards.
 *
 * Backwards run in ascending micro-batch order, as pytorch's ScheduleGPipe does, not in reverse: 1F1B
 * and interleaved 1F1B also finish micro-batches in ascending order, so every schedule adds a stage's
 * per-micro-batch parameter gradients in the same order, and float32 sums (hence losses after the
 * optimizer step) agree bit for bit across schedules. Timing is the same either way: the last stage
 * produces the first gradient only after its last forward.
 */
import { checkCount, op, type PipelineOp, type Schedule } from './ops.ts';

export function buildGPipe(stages: number, microBatches: number): Schedule {
  checkCount(stages, 'stages');
  checkCount(microBatches, 'microBatches');
  const ops: PipelineOp[][] = [];
  for (let stage = 0; stage < stages; stage++) {
    const stageOps: PipelineOp[] = [];
    for (let microBatch = 0; microBatch < microBatches; microBatch++) stageOps.push(op('F', microBatch));
    for (let microBatch = 0; microBatch < microBatches; microBatch++) stageOps.push(op('B', microBatch));
    ops.push(stageOps);
  }
  return { kind: 'gpipe', stages, microBatches, chunks: 1, ops };
}

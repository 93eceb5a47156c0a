/**
 * Implements: ZB-H1, the first handcrafted zero-bubble schedule of Qi et al., "Zero Bubble Pipeline
 * Parallelism" (ICLR 2024), section 3.1 (PyTorch ships it as ScheduleInterleavedZeroBubble with one
 * chunk). The backward is split into B (input gradient) and W (weight gradient), see
 * [Note: split backward] in ops.ts.
 *
 * Stage r runs 1F1B's order of forwards and B's (min(P - r - 1, M) warm-up forwards, then one forward
 * and one B, then the cool-down B's), and its W's in micro-batch order, each r steps behind its B: the
 * j-th B is followed by the W of micro-batch j - r. The rest of the W's close the stage's list.
 *
 * Why: B alone is on the critical path (the previous stage waits for its gradient), so the gradients
 * travel up the pipeline at B's pace instead of the whole backward's, and the W's a stage holds back
 * run where 1F1B idles, at the end of the step. A micro-batch's activations stay until its W, so stage
 * r holds at most (P - r) + r = P micro-batches: what 1F1B's first stage holds, the peak that sizes
 * memory. With F, B and W of equal length the bubble is (P - 1) / (3M + P - 1), a third of 1F1B's.
 */
import { checkCount, op, type PipelineOp, type Schedule } from './ops.ts';

export function buildZeroBubbleH1(stages: number, microBatches: number): Schedule {
  checkCount(stages, 'stages');
  checkCount(microBatches, 'microBatches');
  const ops: PipelineOp[][] = [];
  for (let rank = 0; rank < stages; rank++) {
    const warmup = Math.min(stages - rank - 1, microBatches);
    const weightLag = rank;
    const stageOps: PipelineOp[] = [];
    let nextForward = 0;
    let nextWeight = 0;
    while (nextForward < warmup) stageOps.push(op('F', nextForward++));
    for (let backward = 0; backward < microBatches; backward++) {
      if (nextForward < microBatches) stageOps.push(op('F', nextForward++));
      stageOps.push(op('B', backward));
      if (backward >= weightLag) stageOps.push(op('W', nextWeight++));
    }
    while (nextWeight < microBatches) stageOps.push(op('W', nextWeight++));
    ops.push(stageOps);
  }
  return { kind: 'zb-h1', stages, microBatches, chunks: 1, ops };
}

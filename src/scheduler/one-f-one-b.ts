/**
 * Implements: the non-interleaved 1F1B schedule (PipeDream-flush, Megatron-LM's
 * `forward_backward_pipelining_without_interleaving`). Stage `rank` runs `min(P - rank - 1, M)` warm-up
 * forwards, then alternates one forward and one backward until every forward has run, then the
 * remaining (cool-down) backwards. Micro-batches go forward and backward in ascending order.
 *
 * Why: a stage holds the activations of a micro-batch from its forward to its backward. GPipe holds all
 * M at once; here stage `rank` never holds more than `P - rank` (its warm-up plus the one in flight),
 * whatever M is, with the same bubble as GPipe.
 */
import { checkCount, op, type PipelineOp, type Schedule } from './ops.ts';

export function build1F1B(stages: number, microBatches: number): Schedule {
  checkCount(stages, 'stages');
  checkCount(microBatches, 'microBatches');
  const ops: PipelineOp[][] = [];
  for (let rank = 0; rank < stages; rank++) {
    const warmup = Math.min(stages - rank - 1, microBatches);
    const steady = microBatches - warmup;
    const stageOps: PipelineOp[] = [];
    let nextForward = 0;
    let nextBackward = 0;
    for (let i = 0; i < warmup; i++) stageOps.push(op('F', nextForward++));
    for (let i = 0; i < steady; i++) {
      stageOps.push(op('F', nextForward++));
      stageOps.push(op('B', nextBackward++));
    }
    while (nextBackward < microBatches) stageOps.push(op('B', nextBackward++));
    ops.push(stageOps);
  }
  return { kind: '1f1b', stages, microBatches, chunks: 1, ops };
}

/**
 * Implements: Megatron-LM's interleaved 1F1B schedule (`forward_backward_pipelining_with_interleaving`
 * in megatron/core/pipeline_parallel/schedules.py; Narayanan et al. 2021, section 2.2). Each stage holds
 * V model chunks (chunk c of stage s is virtual stage c * P + s, see ops.ts), so a micro-batch crosses
 * every stage V times and the pipeline fills V times faster: the bubble shrinks about V-fold.
 *
 * A stage runs M * V forwards and as many backwards. Micro-batches go in groups of P: the k-th forward
 * works on chunk (k / P) mod V, and on micro-batch (k / (P V)) * P + k mod P, so a stage pushes a
 * group of P micro-batches through chunk 0, then the same group through chunk 1, and so on. The k-th
 * backward uses the same numbering with the chunks reversed (the gradient enters the last chunk first).
 * Warm-up: 2 (P - rank - 1) + (V - 1) P forwards, capped at M V; then one forward and one backward
 * until the forwards run out; then the cool-down backwards. Like Megatron, when M == P every forward
 * runs in the warm-up (there is no steady state to gain from).
 *
 * Requires M to be a multiple of P: the grouping above assumes whole groups (Megatron refuses the same).
 */
import { checkCount, op, ScheduleError, type PipelineOp, type Schedule } from './ops.ts';

export function buildInterleaved(stages: number, microBatches: number, chunks: number): Schedule {
  checkCount(stages, 'stages');
  checkCount(microBatches, 'microBatches');
  checkCount(chunks, 'chunks');
  if (microBatches % stages !== 0) {
    const lower = Math.floor(microBatches / stages) * stages;
    const upper = lower + stages;
    throw new ScheduleError(
      `the interleaved schedule needs the micro-batches to be a multiple of the stages: ${microBatches} micro-batches over ${stages} stages ` +
        `leaves ${microBatches % stages} over; use ${lower > 0 ? `${lower} or ` : ''}${upper} micro-batches, or the 1f1b schedule`,
    );
  }
  const total = microBatches * chunks;
  const groupSize = stages * chunks;
  const microBatchOf = (k: number) => Math.floor(k / groupSize) * stages + (k % stages);
  const forwardChunkOf = (k: number) => Math.floor((k % groupSize) / stages);
  const forward = (k: number): PipelineOp => op('F', microBatchOf(k), forwardChunkOf(k));
  const backward = (k: number): PipelineOp => op('B', microBatchOf(k), chunks - 1 - forwardChunkOf(k));

  const ops: PipelineOp[][] = [];
  for (let rank = 0; rank < stages; rank++) {
    const warmup = microBatches === stages ? total : Math.min((stages - rank - 1) * 2 + (chunks - 1) * stages, total);
    const stageOps: PipelineOp[] = [];
    for (let k = 0; k < warmup; k++) stageOps.push(forward(k));
    for (let i = 0; i < total - warmup; i++) {
      stageOps.push(forward(warmup + i));
      stageOps.push(backward(i));
    }
    for (let k = total - warmup; k < total; k++) stageOps.push(backward(k));
    ops.push(stageOps);
  }
  return { kind: 'interleaved', stages, microBatches, chunks, ops };
}

/**
 * Implements: ZB-V, the V-shaped zero-bubble schedule of Qi et al., "Zero Bubble Pipeline Parallelism"
 * (ICLR 2024), section 6 (PyTorch's ScheduleZBVZeroBubble). Two chunks per stage in the `v` placement
 * (placement.ts): chunk 0 of stage s is virtual stage s, chunk 1 is virtual stage 2P - 1 - s, so a
 * micro-batch goes down the stages through chunk 0 and comes back up through chunk 1, and the last
 * stage turns it around at once. Backwards are split into B and W ([Note: split backward] in ops.ts).
 *
 * Stage r, in phases (F0/B0/W0 for chunk 0, F1/B1/W1 for chunk 1, every counter in micro-batch order):
 *   1. 2 (P - r) - 1 F0: the forwards that reach the turn of the V before anything comes back;
 *   2. r times F1 F0: chunk 1's first forwards arrive from below, one per step;
 *   3. P - r times F1 B1 W1: the first gradients start back up from the loss at stage 0;
 *   4. steady: F0 (while any is left) B0 W0 F1 B1 W1, until both chunks have run every forward;
 *   5. r times B0 B1, then P - r times B0 W0: the cool-down runs the B's the stages above wait for
 *      first and defers W's;
 *   6. the W's still owed, chunk 1's then chunk 0's.
 * With fewer than 2P - 1 micro-batches the phases are laid out for 2P - 1 and the ops of micro-batches
 * that do not exist are dropped, as PyTorch does.
 *
 * Why: the V keeps the warm-up short (the last stage needs no round trip to start its backwards) and
 * the deferred W's fill the rest; with F, B and W of equal length the bubble nearly vanishes once M >=
 * 2P - 1. A stage holds at most 2P (micro-batch, chunk) pairs, each half a stage's layers: the P
 * micro-batches 1F1B's first stage holds.
 */
import { checkCount, op, ScheduleError, type OpKind, type PipelineOp, type Schedule } from './ops.ts';

export function buildZeroBubbleV(stages: number, microBatches: number, chunks = 2): Schedule {
  checkCount(stages, 'stages');
  checkCount(microBatches, 'microBatches');
  if (chunks !== 2) throw new ScheduleError(`the zbv schedule runs exactly two model chunks per stage (the V goes down and back up), got chunks = ${chunks}: use chunks = 2`);
  const laidOut = Math.max(2 * stages - 1, microBatches);
  const ops: PipelineOp[][] = [];
  for (let rank = 0; rank < stages; rank++) {
    const stageOps: PipelineOp[] = [];
    // next[kind][chunk]: the next micro-batch of that kind of op on that chunk.
    const next: Record<OpKind, [number, number]> = { F: [0, 0], B: [0, 0], W: [0, 0] };
    const emit = (kind: OpKind, chunk: 0 | 1) => stageOps.push(op(kind, next[kind][chunk]++, chunk));
    const times = (count: number, run: () => void) => {
      for (let i = 0; i < count; i++) run();
    };
    times(2 * (stages - rank) - 1, () => emit('F', 0));
    times(rank, () => (emit('F', 1), emit('F', 0)));
    times(stages - rank, () => (emit('F', 1), emit('B', 1), emit('W', 1)));
    while (next.F[1] < next.F[0] || next.F[0] < laidOut) {
      if (next.F[0] < laidOut) emit('F', 0);
      emit('B', 0);
      emit('W', 0);
      emit('F', 1);
      emit('B', 1);
      emit('W', 1);
    }
    times(rank, () => (emit('B', 0), emit('B', 1)));
    times(stages - rank, () => (emit('B', 0), emit('W', 0)));
    while (next.W[1] < next.B[1]) emit('W', 1);
    while (next.W[0] < next.B[0]) emit('W', 0);
    ops.push(stageOps.filter((operation) => operation.microBatch < microBatches));
  }
  return { kind: 'zbv', stages, microBatches, chunks: 2, ops };
}

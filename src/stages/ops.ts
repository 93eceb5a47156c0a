/** Implements: the pipeline operation a stage executes, as the scheduler sends it: forward or backward of one micro-batch of one model chunk. */
export type StageOpKind = 'F' | 'B';

export interface StageOp {
  kind: StageOpKind;
  microBatch: number;
  chunk: number;
}

/** Wire form: ["F" | "B", microBatch, chunk]. */
export type WireStageOp = [StageOpKind, number, number];

export function formatOp(op: StageOp): string {
  return `${op.kind}${op.microBatch}${op.chunk > 0 ? `.${op.chunk}` : ''}`;
}

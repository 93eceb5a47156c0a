/**
 * Implements: the activation memory each schedule kind promises, as the most (micro-batch, chunk) pairs
 * a stage may hold at once (forwarded, saved activations not yet freed by the backward, or by W where the
 * backward is split; see measure.ts). The validator holds every built schedule to it, so a change of a
 * builder that costs memory fails there rather than in a run that runs out of it.
 *
 * GPipe holds everything; 1F1B stage r holds P - r (Megatron's warm-up plus the steady forward);
 * interleaved 1F1B its warm-up of 2 (P - r - 1) + (V - 1) P plus one (everything when M == P, where
 * every forward runs in the warm-up); ZB-H1 and auto-zb P on every stage, 1F1B's first-stage peak; ZB-V 2P pairs,
 * each half a stage's layers, the same memory.
 */
import type { ScheduleKind } from './ops.ts';

export function activationLimit(kind: ScheduleKind, stages: number, stage: number, microBatches: number, chunks: number): number {
  const total = microBatches * chunks;
  switch (kind) {
    case 'gpipe':
      return total;
    case '1f1b':
      return Math.min(stages - stage, total);
    case 'interleaved':
      return microBatches === stages ? total : Math.min(2 * (stages - stage - 1) + (chunks - 1) * stages + 1, total);
    case 'zb-h1':
    case 'auto-zb':
      return Math.min(stages, total);
    case 'zbv':
      return Math.min(2 * stages, total);
  }
}

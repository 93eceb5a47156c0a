/**
 * Implements: where a pipeline stage's model chunks sit in the model. With V chunks per stage the
 * model is cut into P V virtual stages, taken in order by activations; the placement says which
 * (stage, chunk) holds virtual stage v.
 *
 * - `looped` (Megatron's interleaving): chunk c of stage s is virtual stage c P + s, so activations go
 *   down the stages V times, wrapping from the last stage to the first.
 * - `v` (the zero-bubble paper's ZB-V, PyTorch's "v" style): even chunks go down the stages, odd chunks
 *   come back up: chunk 1 of stage s is virtual stage 2P - 1 - s. With two chunks the last stage's
 *   chunk 0 feeds its own chunk 1 without a message, and stage 0 holds both the embedding (virtual stage
 *   0) and the head (the last one), so the tied word embedding never crosses stages.
 *
 * With one chunk both are the identity. The schedule kind decides (placementOf): the builders order
 * their ops for one placement, and every stage, the partition and the simulations must agree on it.
 */
import type { ScheduleKind } from './ops.ts';

export const CHUNK_PLACEMENTS = ['looped', 'v'] as const;
export type ChunkPlacement = (typeof CHUNK_PLACEMENTS)[number];

export function placementOf(kind: ScheduleKind): ChunkPlacement {
  return kind === 'zbv' ? 'v' : 'looped';
}

/** The model's virtual stage that `chunk` of `stage` holds. */
export function virtualStageOf(stage: number, chunk: number, stages: number, placement: ChunkPlacement = 'looped'): number {
  const goesUp = placement === 'v' && chunk % 2 === 1;
  return chunk * stages + (goesUp ? stages - 1 - stage : stage);
}

/** Inverse of virtualStageOf. */
export function placeOfVirtualStage(virtualStage: number, stages: number, placement: ChunkPlacement = 'looped'): { stage: number; chunk: number } {
  const chunk = Math.floor(virtualStage / stages);
  const offset = virtualStage % stages;
  const goesUp = placement === 'v' && chunk % 2 === 1;
  return { stage: goesUp ? stages - 1 - offset : offset, chunk };
}

/** The pipeline stage that holds the head and computes the loss (the last virtual stage). */
export function lossStageOf(stages: number, chunks: number, placement: ChunkPlacement = 'looped'): number {
  return placeOfVirtualStage(stages * chunks - 1, stages, placement).stage;
}

/** Whether the word embedding (virtual stage 0) and the head it is tied to (the last) sit on different stages. */
export function tiedWeightCrossesStages(stages: number, chunks: number, placement: ChunkPlacement = 'looped'): boolean {
  return lossStageOf(stages, chunks, placement) !== 0;
}

/**
 * Layer ranges by stage then chunk for `placement`, from ranges given in looped order (what the
 * partitioners return: `looped[s][c]` is virtual stage c P + s): the same cut of the model, the parts
 * handed to the stages that hold them.
 */
export function placeLayerRanges<T>(looped: readonly (readonly T[])[], placement: ChunkPlacement): T[][] {
  const stages = looped.length;
  return looped.map((chunks, stage) =>
    chunks.map((_, chunk) => {
      const from = placeOfVirtualStage(virtualStageOf(stage, chunk, stages, placement), stages);
      return looped[from.stage]![from.chunk]!;
    }),
  );
}

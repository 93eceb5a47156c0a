/**
 * Implements: uniform partitioning of the model's layers over pipeline stages and chunks, with
 * ColossalAI's semantics (`colossalai.builder.pipeline.partition_uniform`): for each pipeline rank, a
 * list of `[start, end)` layer ranges, one per chunk; chunk c of rank r is virtual stage c P + r, and
 * virtual stages take consecutive layers in order. A range starting at 0 holds the embedding too; one
 * ending at numLayers holds the final norm and the LM head.
 *
 * Layers spread as evenly as possible: first over the chunks, then each chunk's layers over the ranks;
 * where they do not divide, the LATER chunks and, within a chunk, the later ranks get one more layer.
 * That is ColossalAI's choice, kept so a layer lands on the same rank as in the seed tutorial whenever
 * ColossalAI accepts the numbers (it asserts numLayers % chunks == 0; we accept any count and extend
 * the same rule). Every virtual stage gets floor or ceil of numLayers / (P V) layers. ColossalAI only
 * warns when a stage gets no layer; we refuse, since such a stage would only relay activations.
 */
import { checkCount, ScheduleError } from '../scheduler/ops.ts';

export type LayerRange = [start: number, end: number];

export function partitionUniform(numLayers: number, pipelineSize: number, numChunks = 1): LayerRange[][] {
  checkLayerSplit(numLayers, pipelineSize, numChunks);
  const parts: LayerRange[][] = Array.from({ length: pipelineSize }, () => []);
  let start = 0;
  for (let chunk = 0; chunk < numChunks; chunk++) {
    const chunkLayers = evenShare(numLayers, numChunks, chunk);
    for (let rank = 0; rank < pipelineSize; rank++) {
      const end = start + evenShare(chunkLayers, pipelineSize, rank);
      parts[rank]!.push([start, end]);
      start = end;
    }
  }
  return parts;
}

/** Refuses counts that are not positive integers, and fewer layers than virtual stages (each needs one). */
export function checkLayerSplit(numLayers: number, pipelineSize: number, numChunks: number): void {
  checkCount(numLayers, 'numLayers');
  checkCount(pipelineSize, 'pipelineSize');
  checkCount(numChunks, 'numChunks');
  const virtualStages = pipelineSize * numChunks;
  if (numLayers < virtualStages) {
    throw new ScheduleError(
      `cannot split ${numLayers} layers over ${pipelineSize} pipeline stages x ${numChunks} chunks = ${virtualStages} parts: ` +
        `every part needs a layer; use at least ${virtualStages} layers, or fewer stages or chunks`,
    );
  }
}

/** Part `index` of `total` split into `count` parts differing by at most one, the later ones larger. */
function evenShare(total: number, count: number, index: number): number {
  const base = Math.floor(total / count);
  const smaller = count - (total % count);
  return base + (index >= smaller ? 1 : 0);
}

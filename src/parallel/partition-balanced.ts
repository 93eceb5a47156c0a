/**
 * Implements: a pipeline partition that balances cost instead of layer counts, like Megatron's
 * `account_for_embedding_in_pipeline_split` / `account_for_loss_in_pipeline_split` and DeepSpeed's
 * `partition_method`: the first virtual stage also carries the embedding and the last one the LM head
 * and loss, so they get fewer blocks. A pipeline runs at the pace of its slowest stage, and with GPT-2's
 * 50304-word vocabulary the head alone costs as much as several blocks of a narrow model.
 *
 * Consecutive layers go to virtual stages in order (virtual stage c P + r is chunk c of rank r, as in
 * partitionUniform), every virtual stage gets at least one layer. Two passes of dynamic programming:
 * the first finds the smallest possible cost of the most expensive virtual stage; the second, among the
 * splits reaching it, takes the one with the smallest sum of squared stage costs, so the stages that
 * do not set the pace are as even as they can be (equal costs give partitionUniform's counts up to
 * order). Deterministic: every rank computes the same split from the same numbers.
 */
import { checkLayerSplit, type LayerRange } from './partition.ts';
import type { PartCosts } from './stage-cost.ts';

/** Costs are floats: two splits within this relative distance of the optimum count as reaching it. */
const RELATIVE_TOLERANCE = 1e-9;

export function partitionBalanced(numLayers: number, pipelineSize: number, numChunks: number, costs: PartCosts): LayerRange[][] {
  checkLayerSplit(numLayers, pipelineSize, numChunks);
  const stages = pipelineSize * numChunks;
  // Cost of virtual stage `stage` holding layers [start, end).
  const stageCost = (stage: number, start: number, end: number): number =>
    (end - start) * costs.layer + (stage === 0 ? costs.embedding : 0) + (stage === stages - 1 ? costs.head : 0);

  const bottleneck = smallestBottleneck(numLayers, stages, stageCost);
  const limit = bottleneck * (1 + RELATIVE_TOLERANCE);
  const boundaries = evenestSplitUnder(numLayers, stages, stageCost, limit);

  const parts: LayerRange[][] = Array.from({ length: pipelineSize }, () => []);
  for (let stage = 0; stage < stages; stage++) {
    parts[stage % pipelineSize]!.push([boundaries[stage]!, boundaries[stage + 1]!]);
  }
  return parts;
}

type StageCost = (stage: number, start: number, end: number) => number;

/** min over splits of max stage cost; best[k][i]: the first i layers over the first k stages. */
function smallestBottleneck(numLayers: number, stages: number, stageCost: StageCost): number {
  let best = Array.from({ length: numLayers + 1 }, (_, i) => (i === 0 ? 0 : Infinity));
  for (let stage = 0; stage < stages; stage++) {
    const next = new Array<number>(numLayers + 1).fill(Infinity);
    for (let end = stage + 1; end <= numLayers - (stages - 1 - stage); end++) {
      for (let start = stage; start < end; start++) {
        if (best[start] === Infinity) continue;
        next[end] = Math.min(next[end]!, Math.max(best[start]!, stageCost(stage, start, end)));
      }
    }
    best = next;
  }
  return best[numLayers]!;
}

/** The split with the smallest sum of squared costs among those whose every stage costs at most `limit`. */
function evenestSplitUnder(numLayers: number, stages: number, stageCost: StageCost, limit: number): number[] {
  // squares[k][i]: smallest sum of squares placing the first i layers on the first k stages; from[k][i]: where stage k-1 starts.
  const squares: number[][] = [Array.from({ length: numLayers + 1 }, (_, i) => (i === 0 ? 0 : Infinity))];
  const from: number[][] = [[]];
  for (let stage = 0; stage < stages; stage++) {
    const previous = squares[stage]!;
    const row = new Array<number>(numLayers + 1).fill(Infinity);
    const starts = new Array<number>(numLayers + 1).fill(-1);
    for (let end = stage + 1; end <= numLayers - (stages - 1 - stage); end++) {
      for (let start = stage; start < end; start++) {
        const cost = stageCost(stage, start, end);
        if (previous[start] === Infinity || cost > limit) continue;
        const total = previous[start]! + cost * cost;
        // Strictly smaller only: among equals the earliest start wins, giving later stages more layers (partitionUniform's rule).
        if (total < row[end]!) {
          row[end] = total;
          starts[end] = start;
        }
      }
    }
    squares.push(row);
    from.push(starts);
  }
  const boundaries = new Array<number>(stages + 1);
  boundaries[stages] = numLayers;
  for (let stage = stages; stage > 0; stage--) boundaries[stage - 1] = from[stage]![boundaries[stage]!]!;
  return boundaries;
}

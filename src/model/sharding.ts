/**
 * Implements: Megatron 1-D tensor parallelism as data over the parameter table (params.ts): for every
 * parameter, how it splits over the tp ranks, and the region of the FULL tensor that tp rank r holds.
 * Layers, initialization, checkpoints and the planner all read this one table, so a shard's region is
 * decided in one place.
 *
 * The split kinds (Shoeybi et al. 2019, Megatron-LM):
 * - `column`: the output dim (last axis) is split. QKV weight [H, 3H] and bias [3H] by whole heads:
 *   the columns are grouped per head ([head][q|k|v][headDim], params.ts), so a rank's heads are one
 *   contiguous column range. MLP fc1 weight [H, F] and bias [F] by columns.
 * - `row`: the input dim (axis 0) is split. Attention proj weight [H, H] (rows grouped per head, as the
 *   context's columns are) and MLP fc2 weight [F, H]. Their biases are NOT split: each rank's partial
 *   output is all-reduced first, then the bias is added once, so the bias is `replicated`.
 * - `vocab`: the word embedding [V, H] (tied to the LM head) split by rows: each rank owns a contiguous
 *   vocabulary range, masks its lookups, and its logits are that range's columns.
 * - `replicated`: LayerNorms, the position embedding and the row-parallel biases: every rank holds all.
 */
import type { GPTConfig } from './config.ts';
import { POSITION_EMBEDDING, WORD_EMBEDDING, numElements, paramsForSlice, sliceForLayers, type ParamSpec, type Region } from './params.ts';

export type ShardKind = 'column' | 'row' | 'vocab' | 'replicated';

/**
 * A block parameter's rule, by its name within the block. `byHeads`: the split must fall between
 * heads (QKV and the projection's input rows), so numAttentionHeads must divide by tp, not only the dim.
 */
interface ShardRule {
  kind: ShardKind;
  byHeads?: boolean;
}

const BLOCK_RULES: Readonly<Record<string, ShardRule>> = {
  'ln1.gamma': { kind: 'replicated' },
  'ln1.beta': { kind: 'replicated' },
  'attn.qkv.weight': { kind: 'column', byHeads: true },
  'attn.qkv.bias': { kind: 'column', byHeads: true },
  'attn.proj.weight': { kind: 'row', byHeads: true },
  'attn.proj.bias': { kind: 'replicated' },
  'ln2.gamma': { kind: 'replicated' },
  'ln2.beta': { kind: 'replicated' },
  'mlp.fc1.weight': { kind: 'column' },
  'mlp.fc1.bias': { kind: 'column' },
  'mlp.fc2.weight': { kind: 'row' },
  'mlp.fc2.bias': { kind: 'replicated' },
};

const TOP_LEVEL_RULES: Readonly<Record<string, ShardRule>> = {
  [WORD_EMBEDDING]: { kind: 'vocab' },
  [POSITION_EMBEDDING]: { kind: 'replicated' },
  'norm.gamma': { kind: 'replicated' },
  'norm.beta': { kind: 'replicated' },
};

const BLOCK_NAME = /^blocks\.\d+\.(.+)$/;

function ruleFor(spec: ParamSpec): ShardRule {
  const local = BLOCK_NAME.exec(spec.name)?.[1];
  const rule = local === undefined ? TOP_LEVEL_RULES[spec.name] : BLOCK_RULES[local];
  if (rule === undefined) {
    // Guessing `replicated` for a new parameter would silently train a different model under tp > 1.
    throw new Error(`no tensor-parallel rule for parameter ${spec.name}: add one to the rules in src/model/sharding.ts`);
  }
  return rule;
}

export function shardKind(spec: ParamSpec): ShardKind {
  return ruleFor(spec).kind;
}

/** The axis a kind splits: the last (output) axis for column shards, axis 0 otherwise; -1 when none. */
export function splitAxis(spec: ParamSpec): number {
  const kind = shardKind(spec);
  if (kind === 'replicated') return -1;
  return kind === 'column' ? spec.shape.length - 1 : 0;
}

function checkTensorParallelSize(tp: number, tpRank: number): void {
  if (!Number.isInteger(tp) || tp < 1) throw new Error(`tensor-parallel size must be a positive integer, got ${tp}`);
  if (!Number.isInteger(tpRank) || tpRank < 0 || tpRank >= tp) {
    throw new Error(`tensor-parallel rank ${tpRank} is outside 0..${tp - 1} (tensor-parallel size ${tp})`);
  }
}

/**
 * The region of the full tensor that tp rank `tpRank` of `tp` holds. Pass `numAttentionHeads` to also
 * check that head-split parameters fall between heads (paramsForRank always does).
 */
export function shardRegion(spec: ParamSpec, tp: number, tpRank: number, numAttentionHeads?: number): Region {
  checkTensorParallelSize(tp, tpRank);
  const rule = ruleFor(spec);
  const begin = spec.shape.map(() => 0);
  const size = spec.shape.slice();
  if (rule.kind === 'replicated' || tp === 1) return { begin, size };
  if (rule.byHeads && numAttentionHeads !== undefined && numAttentionHeads % tp !== 0) {
    throw new Error(
      `${spec.name}: ${numAttentionHeads} attention heads do not split over tensor-parallel size ${tp}; each rank holds whole heads, so choose a tensor size dividing ${numAttentionHeads}`,
    );
  }
  const axis = splitAxis(spec);
  const dim = spec.shape[axis]!;
  if (dim % tp !== 0) {
    const what = rule.kind === 'vocab' ? 'vocabulary rows' : rule.kind === 'column' ? 'output columns' : 'input rows';
    const hint = rule.kind === 'vocab' ? `; pad model.vocabSize up to a multiple of ${tp}` : '';
    throw new Error(`${spec.name} [${spec.shape}]: its ${dim} ${what} do not split evenly over tensor-parallel size ${tp}${hint}`);
  }
  size[axis] = dim / tp;
  begin[axis] = tpRank * size[axis]!;
  return { begin, size };
}

/** A shard's shape; every tp rank's shard of a parameter has the same shape (splits are even). */
export function shardShape(spec: ParamSpec, tp: number, numAttentionHeads?: number): number[] {
  return shardRegion(spec, tp, 0, numAttentionHeads).size;
}

/**
 * Every reason the model cannot split over `tp` ranks, as messages naming the numbers; empty when it
 * can. (src/config/resolve.ts reports the same conditions against config keys.)
 */
export function tensorParallelProblems(config: GPTConfig, tp: number): string[] {
  const problems: string[] = [];
  const ffn = config.hiddenSize * config.mlpRatio;
  if (config.numAttentionHeads % tp !== 0) {
    problems.push(`numAttentionHeads ${config.numAttentionHeads} is not divisible by tensor-parallel size ${tp} (each rank holds whole heads)`);
  }
  if (ffn % tp !== 0) problems.push(`the MLP width ${ffn} (hiddenSize x mlpRatio) is not divisible by tensor-parallel size ${tp}`);
  if (config.vocabSize % tp !== 0) {
    problems.push(`vocabSize ${config.vocabSize} is not divisible by tensor-parallel size ${tp} (pad it up to a multiple of ${tp})`);
  }
  return problems;
}

/** One parameter as one tp rank holds it. */
export interface ShardedParam {
  spec: ParamSpec;
  kind: ShardKind;
  /** The part of the full tensor this rank holds, as initialValues(spec, seed, region) takes it. */
  region: Region;
  /** Elements held by this rank. */
  numel: number;
}

export interface RankLayout {
  /** The rank's [start, end) layer ranges, one per model chunk (see partitionUniform in src/scheduler/partition.ts). */
  layerRanges: ReadonlyArray<readonly [number, number]>;
  tp: number;
  tpRank: number;
}

/**
 * The parameters one rank holds: those of every chunk's slice (a chunk starting at layer 0 brings the
 * embeddings, one ending at numLayers the final norm and the tied word embedding), each a tp shard.
 * A name held by two chunks of the rank is listed once. Allocates nothing.
 */
export function paramsForRank(config: GPTConfig, layout: RankLayout): ShardedParam[] {
  checkTensorParallelSize(layout.tp, layout.tpRank);
  const problems = tensorParallelProblems(config, layout.tp);
  if (problems.length > 0) throw new Error(`the model does not split over ${layout.tp} tensor-parallel ranks: ${problems.join('; ')}`);
  const seen = new Set<string>();
  const held: ShardedParam[] = [];
  for (const [start, end] of layout.layerRanges) {
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end && end <= config.numLayers)) {
      throw new Error(`layer range [${start}, ${end}) is not a non-empty range within the model's ${config.numLayers} layers`);
    }
    for (const spec of paramsForSlice(config, sliceForLayers(config, start, end))) {
      if (seen.has(spec.name)) continue;
      seen.add(spec.name);
      const region = shardRegion(spec, layout.tp, layout.tpRank, config.numAttentionHeads);
      held.push({ spec, kind: shardKind(spec), region, numel: numElements(region.size) });
    }
  }
  return held;
}

/** Every parameter whole: what one process holding the entire model holds (generation, export, import). */
export function wholeModelParams(config: GPTConfig): ShardedParam[] {
  return paramsForRank(config, { layerRanges: [[0, config.numLayers]], tp: 1, tpRank: 0 });
}

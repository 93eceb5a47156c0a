/**
 * Implements: the human-readable report of a TrainingPlan: a header (layout, schedule, parameter
 * totals), one table row per group of alike ranks (ranks that differ only in their data-parallel or
 * tensor-parallel coordinate hold the same amounts), the replica's sums, and a warning for every group
 * that would not fit the wasm heap (and whether an 80 GiB GPU would hold it).
 */
import { finalNormParameterCount } from './param-count.ts';
import type { RankPlan, TrainingPlan } from './plan.ts';
import type { GPTConfig } from '../model/config.ts';

const GIB = 1024 ** 3;
/** The wasm backend's 32-bit heap; allocations fail near 3.7 GiB (MEASURED.md). */
export const WASM_HEAP_BYTES = 4 * GIB;
/** The largest common accelerator memory (an 80 GB A100 or H100). */
export const GPU_MEMORY_BYTES = 80 * GIB;

export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${units[unit]}`;
}

/** Ascending integers as ranges: [0,1,2,3,8,9] -> "0-3,8-9". */
export function formatIntegerSet(values: readonly number[]): string {
  const sorted = [...new Set(values)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

export interface RankGroup {
  ranks: number[];
  dp: number[];
  pp: number[];
  tp: number[];
  /** Every rank of the group holds what this one does. */
  sample: RankPlan;
}

/** Ranks with equal layers, parameters and bytes, in order of their lowest rank. */
export function groupAlikeRanks(ranks: readonly RankPlan[]): RankGroup[] {
  const groups = new Map<string, RankGroup>();
  for (const rank of ranks) {
    const key = JSON.stringify([rank.pp, rank.layers, rank.params, rank.tiedCopyParams, rank.microBatchesInFlight, rank.bytes]);
    const group = groups.get(key);
    if (group === undefined) {
      groups.set(key, { ranks: [rank.rank], dp: [rank.dp], pp: [rank.pp], tp: [rank.tp], sample: rank });
    } else {
      group.ranks.push(rank.rank);
      group.dp.push(rank.dp);
      group.pp.push(rank.pp);
      group.tp.push(rank.tp);
    }
  }
  return [...groups.values()];
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  // Text columns (ranks, coordinates, layers) align left, amounts right.
  const leftAligned = 5;
  const line = (cells: string[]) =>
    cells.map((cell, column) => (column < leftAligned ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

function describeModel(model: GPTConfig): string {
  return `${model.numLayers} layers, hidden ${model.hiddenSize}, ${model.numAttentionHeads} heads, vocab ${model.vocabSize}, ${model.maxPositionEmbeddings} positions, MLP x${model.mlpRatio}${model.checkpoint ? ', activation checkpointing' : ''}`;
}

/** The memory warnings of a plan, one per group of alike ranks that needs too much. */
export function memoryWarnings(plan: TrainingPlan): string[] {
  const warnings: string[] = [];
  for (const group of groupAlikeRanks(plan.ranks)) {
    const total = group.sample.totalBytes;
    if (total <= WASM_HEAP_BYTES) continue;
    const who = group.ranks.length === 1 ? `rank ${group.ranks[0]}` : `ranks ${formatIntegerSet(group.ranks)}`;
    const each = group.ranks.length === 1 ? 'needs' : 'need';
    const beyond = total > GPU_MEMORY_BYTES ? 'more than the 4 GiB wasm heap and more than an 80 GiB GPU holds' : 'more than the 4 GiB wasm heap (an 80 GiB GPU would hold it)';
    warnings.push(
      `${who} ${each} ${formatBytes(total)}${group.ranks.length === 1 ? '' : ' each'}: ${beyond}. Add pipeline or tensor ranks, lower batchSize or seqLen, or set model.checkpoint.`,
    );
  }
  return warnings;
}

export function formatPlan(plan: TrainingPlan, model: GPTConfig, notes: readonly string[] = []): string {
  const lines: string[] = [];
  lines.push(`Layout: ${plan.layout}`);
  lines.push(`Model: ${describeModel(model)}`);
  lines.push(
    `Parameters: ${formatCount(plan.totalParams)} by Megatron's formula 12·l·h²·(1 + 13/(12h) + (V+s)/(12·l·h)) = ${plan.totalParams.toLocaleString('en-US')}; ` +
      `the parameter table holds ${plan.tableParams.toLocaleString('en-US')} (+${finalNormParameterCount(model)}: the final LayerNorm, which the formula omits)`,
  );
  lines.push(
    `Schedule: ${plan.schedule}, ${plan.numMicroBatches} micro-batch${plan.numMicroBatches === 1 ? '' : 'es'} of ${plan.microBatchSize} sample${plan.microBatchSize === 1 ? '' : 's'} x ${plan.seqLen} tokens` +
      (plan.numChunks > 1 ? `, ${plan.numChunks} chunks per stage` : ''),
  );
  lines.push('Memory: float32 weights 4 B and gradients 4 B per parameter, Adam moments 8 B; activations kept for backward at the schedule\'s peak');
  for (const note of notes) lines.push(`Note: ${note}`);
  lines.push('');

  const groups = groupAlikeRanks(plan.ranks);
  const rows = groups.map((group) => {
    const r = group.sample;
    return [
      formatIntegerSet(group.ranks),
      formatIntegerSet(group.dp),
      formatIntegerSet(group.pp),
      formatIntegerSet(group.tp),
      r.layers.map(([s, e]) => `[${s},${e})`).join(' '),
      formatCount(r.params) + (r.tiedCopyParams > 0 ? '*' : ''),
      formatBytes(r.bytes.params),
      formatBytes(r.bytes.grads),
      formatBytes(r.bytes.optimizer),
      formatBytes(r.bytes.activations),
      String(r.microBatchesInFlight),
      formatBytes(r.totalBytes),
    ];
  });
  lines.push(...table(['ranks', 'dp', 'pp', 'tp', 'layers', 'params', 'weights', 'grads', 'adam', 'activations', 'in flight', 'total/rank'], rows));
  if (plan.ranks.some((r) => r.tiedCopyParams > 0)) {
    lines.push('* includes the last stage\'s copy of the tied word embedding (kept equal to the first stage\'s by the SharedWeight actor)');
  }
  lines.push('');

  const replica = plan.ranks.filter((r) => r.dp === 0);
  const replicaParams = replica.reduce((n, r) => n + r.params, 0);
  const tiedCopies = replica.reduce((n, r) => n + r.tiedCopyParams, 0);
  // A replicated parameter is held whole by each of the tp ranks: all but one copy are extra.
  const replicatedCopies = replica.reduce((n, r) => n + r.replicatedParams, 0) * (1 - 1 / plan.grid.tensor);
  const replicaBytes = replica.reduce((n, r) => n + r.totalBytes, 0);
  const worldBytes = plan.ranks.reduce((n, r) => n + r.totalBytes, 0);
  lines.push(
    `One replica (${replica.length} rank${replica.length === 1 ? '' : 's'}) holds ${replicaParams.toLocaleString('en-US')} parameters = the table's ${plan.tableParams.toLocaleString('en-US')}` +
      (tiedCopies > 0 ? ` + ${tiedCopies.toLocaleString('en-US')} in tied-embedding copies` : '') +
      (replicatedCopies > 0 ? ` + ${replicatedCopies.toLocaleString('en-US')} in copies of replicated parameters on the other tp ranks` : '') +
      (replicaBytes === worldBytes ? `; ${formatBytes(replicaBytes)} in all` : `; ${formatBytes(replicaBytes)}, and ${formatBytes(worldBytes)} over all ${plan.grid.world} ranks`),
  );
  const largest = Math.max(...plan.ranks.map((r) => r.totalBytes));
  lines.push(`Largest rank: ${formatBytes(largest)}`);
  for (const warning of memoryWarnings(plan)) lines.push(`Warning: ${warning}`);
  return lines.join('\n');
}

/**
 * Implements: loading a checkpoint into another parallel layout. A rank of the new layout asks for the
 * regions it holds (global name, full shape, region: shardRegion in src/model/sharding.ts); the manifest
 * says which region of which tensor every old rank file holds, so the request is assembled from whichever
 * files overlap it. Pure over regions: planRegionReads decides what to read, assembleRegion copies.
 *
 * Data-parallel replicas (and the tied embedding's copy on the last stage) hold identical regions: only one
 * is read, the lowest rank's, which makes the choice deterministic.
 */
import { CheckpointError } from './errors.ts';
import type { Checkpoint } from './checkpoint.ts';
import { regionProblem, type CheckpointManifest, type TensorRegion } from './manifest.ts';

export interface RegionTarget {
  /** Global name in the rank files: a parameter's name, or `m.<name>` / `v.<name>` for its Adam moments. */
  name: string;
  fullShape: readonly number[];
  /** Omitted: the whole tensor. */
  region?: TensorRegion;
}

export interface RegionRead {
  rank: number;
  /** The region that rank's file holds. */
  region: TensorRegion;
}

function wholeRegion(shape: readonly number[]): TensorRegion {
  return { begin: shape.map(() => 0), size: [...shape] };
}

function volume(region: TensorRegion): number {
  return region.size.reduce((a, b) => a * b, 1);
}

/** The overlap of two regions of one tensor, or undefined when they do not meet. */
export function intersectRegions(a: TensorRegion, b: TensorRegion): TensorRegion | undefined {
  const begin: number[] = [];
  const size: number[] = [];
  for (let axis = 0; axis < a.begin.length; axis++) {
    const start = Math.max(a.begin[axis]!, b.begin[axis]!);
    const end = Math.min(a.begin[axis]! + a.size[axis]!, b.begin[axis]! + b.size[axis]!);
    if (end <= start) return undefined;
    begin.push(start);
    size.push(end - start);
  }
  return { begin, size };
}

function contains(outer: TensorRegion, inner: TensorRegion): boolean {
  return inner.begin.every((b, axis) => b >= outer.begin[axis]! && b + inner.size[axis]! <= outer.begin[axis]! + outer.size[axis]!);
}

/** True when some rank file of the checkpoint holds tensor `name` (Adam moments exist only after a step). */
export function checkpointHolds(manifest: CheckpointManifest, name: string): boolean {
  return manifest.ranks.some((rank) => rank.tensors.some((t) => t.name === name));
}

/**
 * The rank files to read for `target`, one per distinct overlapping region, lowest rank first; a single file
 * when one region contains the whole target. Throws CheckpointError('layout') when the checkpoint's full
 * shape differs (another model) or its regions do not cover the target.
 */
export function planRegionReads(manifest: CheckpointManifest, target: RegionTarget, source = 'checkpoint'): RegionRead[] {
  const region = target.region ?? wholeRegion(target.fullShape);
  const problem = regionProblem(target.fullShape, region);
  if (problem !== undefined) throw new CheckpointError('invalid-argument', source, `requested region of ${target.name}: ${problem}`);
  const reads: RegionRead[] = [];
  const seen = new Set<string>();
  let found = false;
  for (const rank of manifest.ranks) {
    const tensor = rank.tensors.find((t) => t.name === target.name);
    if (tensor === undefined) continue;
    found = true;
    if (tensor.fullShape.join() !== target.fullShape.join()) {
      throw new CheckpointError(
        'layout',
        source,
        `${target.name} has full shape [${tensor.fullShape}] in the checkpoint (rank ${rank.rank}) but [${target.fullShape}] in the model being loaded: the model config differs`,
      );
    }
    if (volume(region) > 0 && intersectRegions(tensor.region, region) === undefined) continue;
    const key = `${tensor.region.begin}/${tensor.region.size}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (contains(tensor.region, region)) return [{ rank: rank.rank, region: tensor.region }];
    reads.push({ rank: rank.rank, region: tensor.region });
  }
  if (!found) throw new CheckpointError('layout', source, `no rank file holds ${target.name}: the checkpoint is of another model, or was taken before it existed`);
  const missing = uncoveredElements(region, reads.map((r) => r.region));
  if (missing > 0) {
    throw new CheckpointError('layout', source, `the checkpoint's regions of ${target.name} leave ${missing} elements of region [${region.begin}]+[${region.size}] uncovered`);
  }
  return reads;
}

/** How many elements of `target` none of `pieces` covers. */
function uncoveredElements(target: TensorRegion, pieces: readonly TensorRegion[]): number {
  const overlaps = pieces.map((p) => intersectRegions(p, target)).filter((p): p is TensorRegion => p !== undefined);
  const disjoint = overlaps.every((a, i) => overlaps.slice(i + 1).every((b) => intersectRegions(a, b) === undefined));
  if (disjoint) return volume(target) - overlaps.reduce((n, p) => n + volume(p), 0);
  // Overlapping pieces (an unusual layout): count by marking, since volumes would double-count.
  const mask = new Uint8Array(volume(target));
  for (const piece of overlaps) forEachRow(piece, piece, target, (_from, to, length) => mask.fill(1, to, to + length));
  return mask.length - mask.reduce((n, bit) => n + bit, 0);
}

/**
 * Calls `visit(fromIndex, toIndex, length)` for every innermost-axis run of `overlap`, giving its flat offset
 * in a row-major array of region `from` and in one of region `to`. Both regions must contain `overlap`.
 */
function forEachRow(overlap: TensorRegion, from: TensorRegion, to: TensorRegion, visit: (fromIndex: number, toIndex: number, length: number) => void): void {
  const rank = overlap.size.length;
  if (rank === 0) return visit(0, 0, 1);
  if (volume(overlap) === 0) return;
  const strides = (region: TensorRegion): number[] => region.size.map((_, axis) => region.size.slice(axis + 1).reduce((a, b) => a * b, 1));
  const fromStrides = strides(from);
  const toStrides = strides(to);
  const length = overlap.size[rank - 1]!;
  const coord = new Array<number>(rank).fill(0);
  for (;;) {
    let fromIndex = 0;
    let toIndex = 0;
    for (let axis = 0; axis < rank; axis++) {
      const global = overlap.begin[axis]! + coord[axis]!;
      fromIndex += (global - from.begin[axis]!) * fromStrides[axis]!;
      toIndex += (global - to.begin[axis]!) * toStrides[axis]!;
    }
    visit(fromIndex, toIndex, length);
    let axis = rank - 2;
    for (; axis >= 0; axis--) {
      if (++coord[axis]! < overlap.size[axis]!) break;
      coord[axis] = 0;
    }
    if (axis < 0) return;
  }
}

/** Copies the overlap of a source region's values into a target region's values (both row-major). */
export function copyOverlap(source: { region: TensorRegion; values: Float32Array }, target: { region: TensorRegion; values: Float32Array }): void {
  const overlap = intersectRegions(source.region, target.region);
  if (overlap === undefined) return;
  forEachRow(overlap, source.region, target.region, (from, to, length) => {
    target.values.set(source.values.subarray(from, from + length), to);
  });
}

/** The values of `region` assembled from pieces that together cover it (pure; planRegionReads checks coverage). */
export function assembleRegion(region: TensorRegion, pieces: readonly { region: TensorRegion; values: Float32Array }[]): Float32Array {
  const values = new Float32Array(volume(region));
  for (const piece of pieces) copyOverlap(piece, { region, values });
  return values;
}

/**
 * The values of `target` from a loaded checkpoint of any layout. When one saved region equals the target
 * (same layout), the result is a view into the rank file, not a copy: copy it before the file is dropped
 * only if you keep it past Checkpoint.close().
 */
export async function readRegion(checkpoint: Checkpoint, target: RegionTarget): Promise<Float32Array> {
  const region = target.region ?? wholeRegion(target.fullShape);
  const reads = planRegionReads(checkpoint.manifest, target, checkpoint.dir);
  const pieces = [];
  for (const read of reads) {
    const file = await checkpoint.openRank(read.rank);
    const values = file.float32(target.name);
    if (reads.length === 1 && read.region.begin.join() === region.begin.join() && read.region.size.join() === region.size.join()) return values;
    pieces.push({ region: read.region, values });
  }
  return assembleRegion(region, pieces);
}

/** The Adam step count the checkpoint's ranks agree on (every rank applies every update). */
export function optimizerStepOf(manifest: CheckpointManifest, source = 'checkpoint'): number {
  const steps = new Set(manifest.ranks.map((r) => r.optimizerStep));
  if (steps.size !== 1) throw new CheckpointError('manifest', source, `ranks disagree on the optimizer step: ${[...steps].join(', ')}`);
  return [...steps][0]!;
}

/**
 * Implements: ParallelGrid, the one value that maps global ranks to data/pipeline/tensor coordinates
 * and derives every communication group from three sizes and an order string (Megatron's
 * `RankGenerator`, held in an object handed to whoever needs it instead of module globals).
 *
 * The order lists the axes fastest-varying first: with the default `tp-dp-pp` the ranks of one
 * tensor-parallel group are adjacent (their per-layer all-reduces stay inside a node), then data,
 * with pipeline outermost. A rank is the mixed-radix number whose digits are its coordinates:
 *   rank = c[order[0]] + size[order[0]] * (c[order[1]] + size[order[1]] * c[order[2]]).
 *
 * Pure: no I/O, no globals.
 */

export type Axis = 'tp' | 'dp' | 'pp';

/** A group kind: one axis (`dp`), or several joined by '-' (`tp-pp`, the ranks of one model replica). */
export type GroupAxes = Axis | `${Axis}-${Axis}` | `${Axis}-${Axis}-${Axis}`;

export interface GridCoordinates {
  dp: number;
  pp: number;
  tp: number;
}

export interface GridSpec {
  data: number;
  pipeline: number;
  tensor: number;
  /** Axis names fastest-varying first, joined by '-'; a permutation of tp, dp, pp. Default 'tp-dp-pp'. */
  order?: string;
}

export const DEFAULT_GRID_ORDER = 'tp-dp-pp';

/** Canonical spelling of multi-axis group kinds, so 'pp-tp' and 'tp-pp' name the same subjects. */
const CANONICAL_AXES: readonly Axis[] = ['tp', 'dp', 'pp'];

const SIZE_FIELD: Record<Axis, 'tensor' | 'data' | 'pipeline'> = { tp: 'tensor', dp: 'data', pp: 'pipeline' };

export class GridError extends Error {
  override name = 'GridError';
}

export class ParallelGrid {
  readonly data: number;
  readonly pipeline: number;
  readonly tensor: number;
  readonly world: number;
  /** Canonical order string, e.g. 'tp-dp-pp'. */
  readonly order: string;
  /** The axes fastest-varying first. */
  readonly axes: readonly Axis[];
  private readonly strides: Readonly<Record<Axis, number>>;

  constructor(spec: GridSpec) {
    if (spec === null || typeof spec !== 'object') {
      throw new GridError(`ParallelGrid needs { data, pipeline, tensor, order? }, got ${String(spec)}`);
    }
    this.data = checkSize('data', spec.data);
    this.pipeline = checkSize('pipeline', spec.pipeline);
    this.tensor = checkSize('tensor', spec.tensor);
    this.axes = parseOrder(spec.order ?? DEFAULT_GRID_ORDER);
    this.order = this.axes.join('-');
    this.world = this.data * this.pipeline * this.tensor;
    const strides = { tp: 0, dp: 0, pp: 0 };
    let stride = 1;
    for (const axis of this.axes) {
      strides[axis] = stride;
      stride *= this.size(axis);
    }
    this.strides = strides;
  }

  /** The number of ranks along one axis. */
  size(axis: Axis): number {
    return this[SIZE_FIELD[checkAxis(axis)]];
  }

  coordinates(rank: number): GridCoordinates {
    this.checkRank(rank);
    return {
      dp: this.coordinate('dp', rank),
      pp: this.coordinate('pp', rank),
      tp: this.coordinate('tp', rank),
    };
  }

  rankOf(coordinates: GridCoordinates): number {
    if (coordinates === null || typeof coordinates !== 'object') {
      throw new GridError(`rankOf needs { dp, pp, tp }, got ${String(coordinates)}`);
    }
    let rank = 0;
    for (const axis of this.axes) {
      const value = coordinates[axis];
      const size = this.size(axis);
      if (!Number.isInteger(value) || value < 0 || value >= size) {
        throw new GridError(
          `${axis} coordinate ${String(value)} is outside ${SIZE_FIELD[axis]} size ${size} (valid: 0..${size - 1}) in ${this.describe()}`,
        );
      }
      rank += value * this.strides[axis];
    }
    return rank;
  }

  /** This rank's coordinate along one axis. */
  coordinate(axis: Axis, rank: number): number {
    this.checkRank(rank);
    return Math.floor(rank / this.strides[checkAxis(axis)]) % this.size(axis);
  }

  /**
   * The ranks that share every coordinate of `rank` except those on `axes`, ascending. For a single
   * axis that is the order of its coordinate (stage 0 first for 'pp'); for several, the grid's own order.
   */
  group(axes: GroupAxes, rank: number): number[] {
    const varying = parseGroupAxes(axes);
    this.checkRank(rank);
    let base = rank;
    for (const axis of varying) base -= this.coordinate(axis, rank) * this.strides[axis];
    return this.enumerate(base, varying);
  }

  tensorGroup(rank: number): number[] {
    return this.group('tp', rank);
  }

  dataGroup(rank: number): number[] {
    return this.group('dp', rank);
  }

  /** The stages of one model replica (and tensor shard), ordered by pipeline stage. */
  pipelineGroup(rank: number): number[] {
    return this.group('pp', rank);
  }

  /** Every group of a kind, in `groupIndex` order; together they partition the world. */
  allGroups(axes: GroupAxes): number[][] {
    const varying = parseGroupAxes(axes);
    const fixed = this.axes.filter((axis) => !varying.includes(axis));
    return this.enumerate(0, fixed).map((base) => this.enumerate(base, varying));
  }

  /**
   * Which of `allGroups(axes)` holds `rank`: the mixed-radix number of its coordinates on the other
   * axes, in the grid's order (so groups are numbered by their lowest rank).
   */
  groupIndex(axes: GroupAxes, rank: number): number {
    const varying = parseGroupAxes(axes);
    this.checkRank(rank);
    let index = 0;
    let radix = 1;
    for (const axis of this.axes) {
      if (varying.includes(axis)) continue;
      index += this.coordinate(axis, rank) * radix;
      radix *= this.size(axis);
    }
    return index;
  }

  /** A stable name like 'dp.3' or 'tp-pp.0', the same on every member; only [a-z0-9.-], fit for NATS subjects. */
  groupName(axes: GroupAxes, rank: number): string {
    const varying = parseGroupAxes(axes);
    const kind = CANONICAL_AXES.filter((axis) => varying.includes(axis)).join('-');
    return `${kind}.${this.groupIndex(axes, rank)}`;
  }

  /** The rank holding the stage before this rank's, in the same replica and tensor shard; undefined on stage 0. */
  previousStage(rank: number): number | undefined {
    return this.isFirstStage(rank) ? undefined : rank - this.strides.pp;
  }

  /** The rank holding the stage after this rank's; undefined on the last stage. */
  nextStage(rank: number): number | undefined {
    return this.isLastStage(rank) ? undefined : rank + this.strides.pp;
  }

  isFirstStage(rank: number): boolean {
    return this.coordinate('pp', rank) === 0;
  }

  isLastStage(rank: number): boolean {
    return this.coordinate('pp', rank) === this.pipeline - 1;
  }

  /**
   * The first and last stage of this rank's replica and tensor shard, which hold the tied word
   * embedding and LM head (Megatron's `default_embedding_ranks`); one rank when pipeline = 1. The
   * SharedWeight actor sums the tied gradient over it. A middle stage is not a member (see
   * `inEmbeddingGroup`) but learns here which ranks are.
   */
  embeddingGroup(rank: number): number[] {
    const stages = this.pipelineGroup(rank);
    const first = stages[0]!;
    const last = stages[stages.length - 1]!;
    return first === last ? [first] : [first, last];
  }

  inEmbeddingGroup(rank: number): boolean {
    return this.isFirstStage(rank) || this.isLastStage(rank);
  }

  /** Every embedding group, one per pipeline group and in the same order. */
  allEmbeddingGroups(): number[][] {
    return this.allGroups('pp').map((stages) => this.embeddingGroup(stages[0]!));
  }

  /** A stable name like 'embedding.2' (numbered as the pipeline groups), fit for NATS subjects. */
  embeddingGroupName(rank: number): string {
    return `embedding.${this.groupIndex('pp', rank)}`;
  }

  /** The node a rank runs on when every node launches `nprocPerNode` consecutive ranks (torchrun's layout). */
  nodeOf(rank: number, nprocPerNode: number): number {
    this.checkRank(rank);
    return Math.floor(rank / this.checkNprocPerNode(nprocPerNode));
  }

  /** The rank's index among the processes of its node. */
  localRank(rank: number, nprocPerNode: number): number {
    this.checkRank(rank);
    return rank % this.checkNprocPerNode(nprocPerNode);
  }

  describe(): string {
    return `world ${this.world} = data ${this.data} x pipeline ${this.pipeline} x tensor ${this.tensor} (order ${this.order})`;
  }

  /** Everything needed to rebuild an equal grid in another process. */
  toJSON(): Required<GridSpec> {
    return { data: this.data, pipeline: this.pipeline, tensor: this.tensor, order: this.order };
  }

  /** `base` plus every combination of coordinates on `axes`, ascending (axes taken in the grid's order). */
  private enumerate(base: number, axes: readonly Axis[]): number[] {
    let ranks = [base];
    for (const axis of this.axes) {
      if (!axes.includes(axis)) continue;
      const next: number[] = [];
      for (let c = 0; c < this.size(axis); c++) for (const r of ranks) next.push(r + c * this.strides[axis]);
      ranks = next;
    }
    return ranks;
  }

  private checkRank(rank: number): void {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.world) {
      throw new GridError(`rank ${String(rank)} is outside the grid (valid: 0..${this.world - 1}) in ${this.describe()}`);
    }
  }

  private checkNprocPerNode(nprocPerNode: number): number {
    if (!Number.isInteger(nprocPerNode) || nprocPerNode <= 0 || this.world % nprocPerNode !== 0) {
      throw new GridError(
        `nprocPerNode ${String(nprocPerNode)} must be a positive integer dividing world ${this.world}: launch the same number of ranks on every node`,
      );
    }
    return nprocPerNode;
  }
}

function checkSize(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new GridError(`ParallelGrid ${name} size must be a positive integer, got ${describeValue(value)}`);
  }
  return value;
}

function parseOrder(order: unknown): Axis[] {
  const names = typeof order === 'string' ? order.split('-') : [];
  const isPermutation =
    names.length === 3 && CANONICAL_AXES.every((axis) => names.includes(axis));
  if (!isPermutation) {
    throw new GridError(
      `ParallelGrid order ${describeValue(order)} must name tp, dp and pp once each, fastest-varying first, joined by '-' (default '${DEFAULT_GRID_ORDER}')`,
    );
  }
  return names as Axis[];
}

function checkAxis(axis: unknown): Axis {
  if (!CANONICAL_AXES.includes(axis as Axis)) {
    throw new GridError(`unknown grid axis ${describeValue(axis)}: use 'tp', 'dp' or 'pp'`);
  }
  return axis as Axis;
}

function parseGroupAxes(axes: unknown): Axis[] {
  const names = typeof axes === 'string' ? axes.split('-') : [];
  const valid =
    names.length > 0 &&
    names.every((name) => CANONICAL_AXES.includes(name as Axis)) &&
    new Set(names).size === names.length;
  if (!valid) {
    throw new GridError(
      `group kind ${describeValue(axes)} must be 'tp', 'dp', 'pp', or distinct ones joined by '-' (e.g. 'tp-pp')`,
    );
  }
  return names as Axis[];
}

function describeValue(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : String(value);
}
